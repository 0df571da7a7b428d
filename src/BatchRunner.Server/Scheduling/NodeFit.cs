using System.Globalization;
using BatchRunner.Core;
using BatchRunner.Runtime.Gpus;
using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Scheduling;

/// <summary>What a node offers a job: its capacity and labels, what it lets jobs ask for, and where known (the worker's
/// own node) the model of each GPU.</summary>
/// <param name="GpuDeviceModels">One entry per GPU. Null for a node record, which lists its models but not how many of each:
/// then a GPU model is checked for presence only.</param>
/// <param name="Policy">Network modes, capabilities and datasets it allows; null: not known (a node of an older version),
/// and left to that node's own admission.</param>
public sealed record NodeOffer(string Name, NodeCapacity Capacity, IReadOnlyDictionary<string, string> Labels, IReadOnlyList<string>? GpuDeviceModels = null,
    NodePolicy? Policy = null)
{
    public static NodeOffer Of(LiveNode node) => new(node.Name, node.Capacity, node.Labels, Policy: node.Policy);

    /// <summary>The policy a node's isolation settings give (what its record publishes).</summary>
    public static NodePolicy PolicyOf(Hosting.IsolationOptions isolation) => new(
        [.. isolation.AllowedNetworkModes],
        [.. isolation.NormalizedCapabilities],
        [.. isolation.Datasets.Keys.Order(StringComparer.Ordinal)]);
}

/// <summary>
/// The one answer to "could this job ever run on that node?": its labels match the job's nodeSelector, its
/// whole capacity (nothing else running) covers the request, GPU model included, and its policy allows the job's
/// network mode, capabilities and datasets. Pure: the same answer at
/// submission (against every live node's record: <see cref="WhyNoNodeFits"/>) and in the executor (against its
/// own node: <see cref="WhyNever"/>). Whether it fits <em>now</em> is <see cref="NodeReservations"/>' question.
/// </summary>
public static class NodeFit
{
    /// <summary>A resource admission counts: its field in the job spec, its amount, how to print an amount alone ("4",
    /// "21.5Gi") and with its noun ("1 GPU", "2 CPUs", "16Gi memory").</summary>
    private sealed record Dimension(string Field, Func<ResourceAmounts, double> Amount, Func<double, string> Format, Func<double, string> Describe, double Tolerance = 0)
    {
        public bool Exceeds(double requested, double offered) => requested > offered + Tolerance;
    }

    private static readonly Dimension[] Dimensions =
    [
        new("resources.cpus", a => a.Cpus, v => v.ToString("0.###", CultureInfo.InvariantCulture), v => Quantity.Count(v, "CPU"), ResourceAmounts.CpuTolerance),
        new("resources.memory", a => a.MemoryBytes, v => Quantity.Human((long)v), v => $"{Quantity.Human((long)v)} memory"),
        new("resources.gpus", a => a.Gpus, v => v.ToString(CultureInfo.InvariantCulture), v => Quantity.Count(v, "GPU")),
        new("resources.disk", a => a.DiskBytes, v => Quantity.Human((long)v), v => $"{Quantity.Human((long)v)} disk"),
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
            return $"{d.Describe(d.Amount(requested))} requested, node has {d.Format(d.Amount(offered))}";
        }
        return WhyNoGpuModel(spec.Resources, node) ?? WhyRefused(spec, node.Policy);
    }

    /// <summary>What <paramref name="policy"/> does not allow of <paramref name="spec"/>, in words; null when it allows everything
    /// (or is not known).</summary>
    private static string? WhyRefused(JobSpec spec, NodePolicy? policy)
    {
        if (policy is null) return null;
        if (!policy.NetworkModes.Contains(spec.Network))
            return $"network mode \"{spec.Network}\" is not allowed there (allowed: {string.Join(", ", policy.NetworkModes)})";
        if (MissingCapabilities(spec, policy) is { Count: > 0 } caps)
            return $"capabilities {string.Join(", ", caps)} are not allowed there";
        if (MissingDatasets(spec, policy).FirstOrDefault() is { Dataset: { } ds })
            return $"it has no dataset \"{ds}\" (it has {(policy.Datasets.Count == 0 ? "none" : string.Join(", ", policy.Datasets))})";
        return null;
    }

    private static List<string> MissingCapabilities(JobSpec spec, NodePolicy policy) =>
        spec.Capabilities.Select(LinuxCapabilities.Normalize).Where(c => !policy.Capabilities.Contains(c)).ToList();

    private static IEnumerable<(int Index, string Dataset)> MissingDatasets(JobSpec spec, NodePolicy policy) =>
        spec.Volumes.Select((v, i) => (i, v.Dataset)).Where(v => !policy.Datasets.Contains(v.Dataset));

    /// <summary>Field → message for each thing the job asks for that no node in <paramref name="nodes"/> allows.</summary>
    private static void AddPolicyErrors(JobSpec spec, IReadOnlyList<NodeOffer> nodes, Dictionary<string, string[]> errors)
    {
        var known = nodes.Where(n => n.Policy is not null).Select(n => n.Policy!).ToList();
        // A node of an older version publishes no policy: it might allow anything, so nothing is refused here for it.
        if (known.Count < nodes.Count || known.Count == 0) return;
        if (!known.Any(p => p.NetworkModes.Contains(spec.Network)))
            errors["network"] = [$"network mode \"{spec.Network}\" is not allowed on any live node; allowed: {Union(known.SelectMany(p => p.NetworkModes))}"];
        var caps = spec.Capabilities.Select(LinuxCapabilities.Normalize).Where(c => !known.Any(p => p.Capabilities.Contains(c))).ToList();
        if (caps.Count > 0)
            errors["capabilities"] = [$"not allowed on any live node: {string.Join(", ", caps)}; allowed: {Union(known.SelectMany(p => p.Capabilities))}"];
        foreach (var (i, ds) in spec.Volumes.Select((v, i) => (i, v.Dataset)))
            if (!known.Any(p => p.Datasets.Contains(ds)))
                errors[$"volumes[{i}].dataset"] = [$"unknown dataset \"{ds}\": no live node has it; they have {Union(known.SelectMany(p => p.Datasets))}"];
    }

    private static string Union(IEnumerable<string> values)
    {
        var list = values.Distinct().Order(StringComparer.Ordinal).ToList();
        return list.Count == 0 ? "none" : string.Join(", ", list);
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
                errors[d.Field] = [$"{d.Describe(d.Amount(requested))} requested; the largest live node has {d.Format(largest)}"];
        }
        if (errors.Count == 0 && selected.All(n => WhyNoGpuModel(spec.Resources, n) is not null))
        {
            var models = selected.SelectMany(n => n.Capacity.GpuModels).Distinct().Order(StringComparer.Ordinal).ToList();
            errors["resources.gpuModel"] = [$"no live node has {Quantity.Count(spec.Resources.Gpus, "GPU")} of a model matching \"{spec.Resources.GpuModel}\" " +
                $"(models: {(models.Count == 0 ? "none" : string.Join(", ", models))})"];
        }
        AddPolicyErrors(spec, selected, errors);
        if (errors.Count == 0)
            errors["resources"] = ["no single live node has enough CPUs, memory, GPUs and disk and allows this job's network mode, capabilities and datasets together"];
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
            return matching >= request.Gpus ? null : $"{Quantity.Count(request.Gpus, "GPU")} of model \"{request.GpuModel}\" requested, node has {matching}";
        }
        return node.Capacity.GpuModels.Any(m => GpuCapacity.ModelMatches(m, request.GpuModel))
            ? null : $"GPU model \"{request.GpuModel}\" requested, node has {(node.Capacity.GpuModels.Count == 0 ? "none" : string.Join(", ", node.Capacity.GpuModels))}";
    }

    private static string Selector(IReadOnlyDictionary<string, string> selector) => string.Join(", ", selector.Select(kv => $"{kv.Key}={kv.Value}"));
}
