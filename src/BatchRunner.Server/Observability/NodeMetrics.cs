using Prometheus;

namespace BatchRunner.Server.Observability;

/// <summary>
/// Capacity and allocation of worker nodes: <c>batchrunner_node_capacity_{cpus,memory_bytes,gpus}{node}</c> and
/// <c>batchrunner_node_allocated_{cpus,memory_bytes,gpus}{node}</c>.
/// </summary>
/// <remarks>
/// Written only by the node's reservations (Scheduling/NodeReservations), which set capacity once and the
/// allocation whenever a job's reservation is taken or given back: the series always equal what admission
/// counts. Each worker process exports its own node.
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

    /// <summary>What <paramref name="node"/> offers to jobs.</summary>
    public static void SetCapacity(string node, double cpus, long memoryBytes, int gpus)
    {
        CapacityCpus.WithLabels(node).Set(cpus);
        CapacityMemoryBytes.WithLabels(node).Set(memoryBytes);
        CapacityGpus.WithLabels(node).Set(gpus);
    }

    /// <summary>What the jobs admitted to <paramref name="node"/> requested, in total.</summary>
    public static void SetAllocated(string node, double cpus, long memoryBytes, int gpus)
    {
        AllocatedCpus.WithLabels(node).Set(cpus);
        AllocatedMemoryBytes.WithLabels(node).Set(memoryBytes);
        AllocatedGpus.WithLabels(node).Set(gpus);
    }

    /// <summary>Removes every series of a node that left the cluster.</summary>
    public static void Remove(string node)
    {
        foreach (var g in new[] { CapacityCpus, CapacityMemoryBytes, CapacityGpus, AllocatedCpus, AllocatedMemoryBytes, AllocatedGpus })
            g.RemoveLabelled(node);
    }
}
