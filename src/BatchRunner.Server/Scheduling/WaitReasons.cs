using System.Globalization;
using BatchRunner.Core;
using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Scheduling;

/// <summary>
/// Why a queued job waits, in the words its <c>message</c> shows: made where admission decides (the executor, the
/// attempt's begin), describing the cluster rather than the one node that declined it. Pure. Each reason is one
/// method here; the workflows' <c>waiting for dependency …</c> belongs with them.
/// </summary>
public static class WaitReasons
{
    /// <summary>No live node (of those the job's nodeSelector picks) has the job's request free now: names the first
    /// resource no node has enough of, with the largest amount free on any node; or, when each resource is free
    /// somewhere but never all on one node, says so.</summary>
    public static string Capacity(JobSpec spec, IReadOnlyList<NodeInfo> liveNodes)
    {
        var nodes = liveNodes.Where(n => n.Alive && NodeFit.LabelsMatch(spec.NodeSelector, n.Labels)).ToList();
        var request = ResourceAmounts.Of(spec.Resources);
        var needs = Needs(request);
        if (nodes.Count == 0) return $"waiting for {needs} on a live node{Selector(spec)}";
        var free = nodes.Select(Free).ToList();
        if (request.Cpus > free.Max(f => f.Cpus) + ResourceAmounts.CpuTolerance)
            return $"waiting for {Cpus(request.Cpus)} on any node (largest free: {Number(Math.Max(0, free.Max(f => f.Cpus)))})";
        if (request.MemoryBytes > free.Max(f => f.MemoryBytes))
            return $"waiting for {Quantity.FormatBytes(request.MemoryBytes)} memory on any node (largest free: {Quantity.FormatBytes(Math.Max(0, free.Max(f => f.MemoryBytes)))})";
        if (request.Gpus > free.Max(f => f.Gpus))
            return $"waiting for {Gpus(request.Gpus)} on any node (largest free: {Math.Max(0, free.Max(f => f.Gpus))})";
        if (request.DiskBytes > free.Max(f => f.DiskBytes))
            return $"waiting for {Quantity.FormatBytes(request.DiskBytes)} disk on any node (largest free: {Quantity.FormatBytes(Math.Max(0, free.Max(f => f.DiskBytes)))})";
        return $"waiting for {needs} together on one node";
    }

    /// <summary>The job's queue has <paramref name="limit"/> jobs starting or running (QueueLimits).</summary>
    public static string QueueLimit(string queue, int limit) => $"queue limit {limit} reached (queue {queue})";

    /// <summary>The job's tenant runs its maxRunning of a resource already (or this job would take it past).</summary>
    public static string TenantQuota(AttemptStart.TenantQuotaFull full) => full.Resource switch
    {
        "cpus" => $"tenant quota: {Number(full.Used)} of {Cpus(full.Limit)} running",
        "memoryBytes" => $"tenant quota: {Quantity.FormatBytes((long)full.Used)} of {Quantity.FormatBytes((long)full.Limit)} memory running",
        "gpus" => $"tenant quota: {Number(full.Used)} of {Gpus((int)full.Limit)} running",
        _ => $"tenant quota: {Number(full.Used)} of {Number(full.Limit)} {full.Resource} running",
    };

    private static ResourceAmounts Free(NodeInfo n) =>
        ResourceAmounts.Of(n.Capacity) - new ResourceAmounts(n.Allocated.Cpus, n.Allocated.MemoryBytes, n.Allocated.Gpus, n.Allocated.DiskBytes);

    private static string Needs(ResourceAmounts r) =>
        $"{Cpus(r.Cpus)}, {Quantity.FormatBytes(r.MemoryBytes)} memory" + (r.Gpus > 0 ? $" and {Gpus(r.Gpus)}" : "");

    private static string Selector(JobSpec spec) =>
        spec.NodeSelector.Count == 0 ? "" : $" with the labels {string.Join(", ", spec.NodeSelector.Select(kv => $"{kv.Key}={kv.Value}"))}";

    private static string Cpus(double cpus) => $"{Number(cpus)} {(cpus > 1 ? "CPUs" : "CPU")}";

    private static string Gpus(int gpus) => $"{gpus} {(gpus == 1 ? "GPU" : "GPUs")}";

    private static string Number(double v) => Math.Round(v, 3).ToString(CultureInfo.InvariantCulture);
}
