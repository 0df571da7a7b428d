using System.Globalization;
using BatchRunner.Core;
using BatchRunner.Runtime.Gpus;
using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Scheduling;

/// <summary>What a node offers a job: its capacity and labels, and where known (the worker's own node) the model of each GPU.</summary>
/// <param name="GpuDeviceModels">One entry per GPU. Null for a node record, which lists its models but not how many of each:
/// then a GPU model is checked for presence only.</param>
public sealed record NodeOffer(string Name, NodeCapacity Capacity, IReadOnlyDictionary<string, string> Labels, IReadOnlyList<string>? GpuDeviceModels = null)
{
    public static NodeOffer Of(LiveNode node) => new(node.Name, node.Capacity, node.Labels);
}

/// <summary>
/// The one answer to "could this job ever run on that node?": its labels match the job's nodeSelector, and its
/// whole capacity (nothing else running) covers the request, GPU model included. Pure: the same answer at
/// submission (against every live node's record: <see cref="WhyNoNodeFits"/>) and in the executor (against its
/// own node: <see cref="WhyNever"/>). Whether it fits <em>now</em> is <see cref="NodeReservations"/>' question.
/// </summary>
public static class NodeFit
{
    /// <summary>A resource admission counts: its field in the job spec, its noun, its amount, how to print one.</summary>
    private sealed record Dimension(string Field, string Noun, Func<ResourceAmounts, double> Amount, Func<double, string> Format, double Tolerance = 0)
    {
        public bool Exceeds(double requested, double offered) => requested > offered + Tolerance;
    }

    private static readonly Dimension[] Dimensions =
    [
        new("resources.cpus", "CPUs", a => a.Cpus, v => v.ToString(CultureInfo.InvariantCulture), ResourceAmounts.CpuTolerance),
        new("resources.memory", "memory", a => a.MemoryBytes, v => Quantity.FormatBytes((long)v)),
        new("resources.gpus", "GPUs", a => a.Gpus, v => v.ToString(CultureInfo.InvariantCulture)),
    ];

    /// <summary>Why <paramref name="spec"/> can never run on <paramref name="node"/>, in words; null when it could.</summary>
    public static string? WhyNever(JobSpec spec, NodeOffer node)
    {
        if (!LabelsMatch(spec.NodeSelector, node.Labels))
            return $"its labels do not match the nodeSelector {Selector(spec.NodeSelector)}";
        var requested = ResourceAmounts.Of(spec.Resources);
        var offered = ResourceAmounts.Of(node.Capacity);
        if (!requested.FitsWithin(offered))
        {
            var d = Dimensions.First(d => d.Exceeds(d.Amount(requested), d.Amount(offered)));
            return $"{d.Format(d.Amount(requested))} {d.Noun} requested, node has {d.Format(d.Amount(offered))}";
        }
        return WhyNoGpuModel(spec.Resources, node);
    }

    /// <summary>
    /// Field → messages when none of <paramref name="nodes"/> could ever run <paramref name="spec"/> (the largest
    /// node's figure for each resource no node offers enough of); empty when one could.
    /// </summary>
    public static Dictionary<string, string[]> WhyNoNodeFits(JobSpec spec, IReadOnlyList<NodeOffer> nodes)
    {
        var errors = new Dictionary<string, string[]>();
        if (nodes.Count == 0)
        {
            errors["resources"] = ["no live worker node: start a worker (role all or worker) against this database"];
            return errors;
        }
        var selected = nodes.Where(n => LabelsMatch(spec.NodeSelector, n.Labels)).ToList();
        if (selected.Count == 0)
        {
            errors["nodeSelector"] = [$"no live node has the labels {Selector(spec.NodeSelector)}"];
            return errors;
        }
        if (selected.Any(n => WhyNever(spec, n) is null)) return errors;

        var requested = ResourceAmounts.Of(spec.Resources);
        foreach (var d in Dimensions)
        {
            var largest = selected.Max(n => d.Amount(ResourceAmounts.Of(n.Capacity)));
            if (d.Exceeds(d.Amount(requested), largest))
                errors[d.Field] = [$"{d.Format(d.Amount(requested))} {d.Noun} requested; the largest live node has {d.Format(largest)}"];
        }
        if (errors.Count == 0 && selected.All(n => WhyNoGpuModel(spec.Resources, n) is not null))
        {
            var models = selected.SelectMany(n => n.Capacity.GpuModels).Distinct().Order(StringComparer.Ordinal).ToList();
            errors["resources.gpuModel"] = [$"no live node has {spec.Resources.Gpus} GPUs of a model matching \"{spec.Resources.GpuModel}\" " +
                $"(models: {(models.Count == 0 ? "none" : string.Join(", ", models))})"];
        }
        if (errors.Count == 0) errors["resources"] = ["no single live node has enough CPUs, memory and GPUs together for this job"];
        return errors;
    }

    public static bool LabelsMatch(IReadOnlyDictionary<string, string> selector, IReadOnlyDictionary<string, string> labels) =>
        selector.All(kv => labels.TryGetValue(kv.Key, out var v) && v == kv.Value);

    private static string? WhyNoGpuModel(ResourceRequest request, NodeOffer node)
    {
        if (request.Gpus == 0 || string.IsNullOrWhiteSpace(request.GpuModel)) return null;
        if (node.GpuDeviceModels is { } devices)
        {
            var matching = devices.Count(m => GpuCapacity.ModelMatches(m, request.GpuModel));
            return matching >= request.Gpus ? null : $"{request.Gpus} GPUs of model \"{request.GpuModel}\" requested, node has {matching}";
        }
        return node.Capacity.GpuModels.Any(m => GpuCapacity.ModelMatches(m, request.GpuModel))
            ? null : $"GPU model \"{request.GpuModel}\" requested, node has {(node.Capacity.GpuModels.Count == 0 ? "none" : string.Join(", ", node.Capacity.GpuModels))}";
    }

    private static string Selector(IReadOnlyDictionary<string, string> selector) => string.Join(", ", selector.Select(kv => $"{kv.Key}={kv.Value}"));
}
