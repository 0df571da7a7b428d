using BatchRunner.Core;
using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Scheduling;

/// <summary>
/// The capacities of live nodes, for submission checks: a job that fits no live node is refused at
/// once instead of waiting forever. Cached for two seconds so submission stays cheap under load.
/// </summary>
public sealed class LiveNodes(NodeStore nodes)
{
    private static readonly TimeSpan CacheFor = TimeSpan.FromSeconds(2);
    private (DateTime At, IReadOnlyList<LiveNode> Nodes)? _cache;

    public async Task<IReadOnlyList<LiveNode>> GetAsync(CancellationToken ct)
    {
        if (_cache is { } c && DateTime.UtcNow - c.At < CacheFor) return c.Nodes;
        var list = await nodes.ListLiveAsync(ct);
        _cache = (DateTime.UtcNow, list);
        return list;
    }

    /// <summary>Field → message when no live node could ever run <paramref name="spec"/>; empty when one could.</summary>
    public async Task<Dictionary<string, string[]>> WhyNoNodeFitsAsync(JobSpec spec, int gpus, CancellationToken ct)
    {
        var live = await GetAsync(ct);
        var errors = new Dictionary<string, string[]>();
        if (live.Count == 0)
        {
            errors["resources"] = ["no live worker node: start a worker (role all or worker) against this database"];
            return errors;
        }
        var selected = live.Where(n => spec.NodeSelector.All(kv => n.Labels.TryGetValue(kv.Key, out var v) && v == kv.Value)).ToList();
        if (selected.Count == 0)
        {
            errors["nodeSelector"] = [$"no live node has the labels {string.Join(", ", spec.NodeSelector.Select(kv => $"{kv.Key}={kv.Value}"))}"];
            return errors;
        }
        if (selected.Any(n => n.Capacity.WhyNeverFits(spec.Resources, gpus) is null)) return errors;
        var maxCpus = selected.Max(n => n.Capacity.Cpus);
        var maxMem = selected.Max(n => n.Capacity.MemoryBytes);
        var maxGpus = selected.Max(n => n.Capacity.Gpus);
        if (spec.Resources.Cpus > maxCpus) errors["resources.cpus"] = [$"{spec.Resources.Cpus} CPUs requested; the largest live node has {maxCpus}"];
        if (spec.Resources.MemoryBytes > maxMem) errors["resources.memory"] = [$"{Quantity.FormatBytes(spec.Resources.MemoryBytes)} requested; the largest live node has {Quantity.FormatBytes(maxMem)}"];
        if (gpus > maxGpus) errors["resources.gpus"] = [$"{gpus} GPUs requested; the largest live node has {maxGpus}"];
        if (errors.Count == 0) errors["resources"] = ["no single live node has enough CPUs, memory and GPUs together for this job"];
        return errors;
    }
}
