using Prometheus;

namespace BatchRunner.Server.Observability;

/// <summary>
/// Capacity and allocation of worker nodes: <c>batchrunner_node_capacity_{cpus,memory_bytes,gpus}{node}</c> and
/// <c>batchrunner_node_allocated_{cpus,memory_bytes,gpus}{node}</c>.
/// </summary>
/// <remarks>
/// The scheduler (node records, admission) is the source of truth and calls <see cref="SetCapacity"/> and
/// <see cref="SetAllocated"/> whenever they change, for every node it knows (the API process may export
/// all nodes; a node that leaves is <see cref="Remove"/>d). Until it does for a node, BatchRunner exports
/// what the worker itself knows: capacity = this host's CPUs and memory (set at worker start), allocated =
/// the requests of the containers this process runs (<see cref="AddLocalAllocation"/>, from
/// <see cref="JobTelemetry"/>). The first <see cref="SetAllocated"/> for a node turns that fallback off.
/// </remarks>
public static class NodeMetrics
{
    private static readonly string[] Labels = ["node"];

    public static readonly Gauge CapacityCpus = Metrics.CreateGauge("batchrunner_node_capacity_cpus", "CPUs a node offers to jobs.", Labels);
    public static readonly Gauge CapacityMemoryBytes = Metrics.CreateGauge("batchrunner_node_capacity_memory_bytes", "Memory a node offers to jobs, in bytes.", Labels);
    public static readonly Gauge CapacityGpus = Metrics.CreateGauge("batchrunner_node_capacity_gpus", "GPUs a node offers to jobs.", Labels);
    public static readonly Gauge AllocatedCpus = Metrics.CreateGauge("batchrunner_node_allocated_cpus", "CPUs requested by the jobs placed on a node.", Labels);
    public static readonly Gauge AllocatedMemoryBytes = Metrics.CreateGauge("batchrunner_node_allocated_memory_bytes", "Memory requested by the jobs placed on a node, in bytes.", Labels);
    public static readonly Gauge AllocatedGpus = Metrics.CreateGauge("batchrunner_node_allocated_gpus", "GPUs assigned to the jobs placed on a node.", Labels);

    private static readonly Lock Gate = new();
    private static readonly Dictionary<string, (double Cpus, double MemoryBytes)> Local = [];
    private static readonly HashSet<string> Scheduled = [];

    /// <summary>What <paramref name="node"/> offers to jobs.</summary>
    public static void SetCapacity(string node, double cpus, long memoryBytes, int gpus)
    {
        CapacityCpus.WithLabels(node).Set(cpus);
        CapacityMemoryBytes.WithLabels(node).Set(memoryBytes);
        CapacityGpus.WithLabels(node).Set(gpus);
    }

    /// <summary>What the jobs admitted to <paramref name="node"/> requested, in total. From now on the scheduler owns this node's allocation series.</summary>
    public static void SetAllocated(string node, double cpus, long memoryBytes, int gpus)
    {
        lock (Gate)
        {
            Scheduled.Add(node);
            Local.Remove(node);
            AllocatedCpus.WithLabels(node).Set(cpus);
            AllocatedMemoryBytes.WithLabels(node).Set(memoryBytes);
            AllocatedGpus.WithLabels(node).Set(gpus);
        }
    }

    /// <summary>Removes every series of a node that left the cluster.</summary>
    public static void Remove(string node)
    {
        lock (Gate)
        {
            Local.Remove(node);
            Scheduled.Remove(node);
            foreach (var g in new[] { CapacityCpus, CapacityMemoryBytes, CapacityGpus, AllocatedCpus, AllocatedMemoryBytes, AllocatedGpus })
                g.RemoveLabelled(node);
        }
    }

    /// <summary>
    /// Fallback allocation: a container of this process started (positive) or ended (negative). Ignored
    /// for nodes whose allocation the scheduler has set.
    /// </summary>
    internal static void AddLocalAllocation(string node, double cpus, long memoryBytes)
    {
        lock (Gate)
        {
            if (Scheduled.Contains(node)) return;
            var (c, m) = Local.GetValueOrDefault(node);
            c = Math.Max(0, c + cpus);
            m = Math.Max(0, m + memoryBytes);
            Local[node] = (c, m);
            AllocatedCpus.WithLabels(node).Set(Math.Round(c, 6));
            AllocatedMemoryBytes.WithLabels(node).Set(m);
            AllocatedGpus.WithLabels(node).Set(0);
        }
    }

    /// <summary>Capacity of this host as the worker sees it at start: logical CPUs and physical memory. GPUs: 0 until the GPU code sets them.</summary>
    internal static void SetLocalCapacity(string node)
    {
        CapacityCpus.WithLabels(node).Set(Environment.ProcessorCount);
        CapacityMemoryBytes.WithLabels(node).Set(HostMemoryBytes());
        if (!CapacityGpus.GetAllLabelValues().Any(v => v[0] == node)) CapacityGpus.WithLabels(node).Set(0);
        AddLocalAllocation(node, 0, 0);
    }

    private static long HostMemoryBytes()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/meminfo"))
                if (line.StartsWith("MemTotal:", StringComparison.Ordinal))
                    return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], System.Globalization.CultureInfo.InvariantCulture) * 1024;
        }
        catch (IOException) { }
        return GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
    }
}
