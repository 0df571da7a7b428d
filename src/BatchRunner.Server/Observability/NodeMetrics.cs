using Prometheus;

namespace BatchRunner.Server.Observability;

/// <summary>
/// Capacity and allocation of worker nodes: <c>batchrunner_node_capacity_{cpus,memory_bytes,gpus,disk_bytes}{node}</c> and
/// <c>batchrunner_node_allocated_{cpus,memory_bytes,gpus,disk_bytes}{node}</c>; the data directory's free space, its reserve
/// and whether it is below it: <c>batchrunner_node_disk_{free,reserve}_bytes</c>, <c>batchrunner_node_disk_pressure</c>.
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
    public static readonly Gauge CapacityDiskBytes = Metrics.CreateGauge("batchrunner_node_capacity_disk_bytes",
        "The most disk one job may be granted on a node (its data filesystem less the free-space reserve), in bytes.", Labels);
    public static readonly Gauge AllocatedDiskBytes = Metrics.CreateGauge("batchrunner_node_allocated_disk_bytes", "Disk granted to the jobs placed on a node, in bytes.", Labels);
    public static readonly Gauge DiskFreeBytes = Metrics.CreateGauge("batchrunner_node_disk_free_bytes", "Free space of a node's data directory, in bytes.", Labels);
    public static readonly Gauge DiskReserveBytes = Metrics.CreateGauge("batchrunner_node_disk_reserve_bytes",
        "Free space a node keeps for its database, logs and pulls (MinFreeDisk), in bytes.", Labels);
    public static readonly Gauge DiskPressure = Metrics.CreateGauge("batchrunner_node_disk_pressure",
        "1 while a node's data directory has less free space than its reserve and no new job starts there, else 0.", Labels);

    /// <summary>What <paramref name="node"/> offers to jobs (<paramref name="diskBytes"/> null: disk is not limited there).</summary>
    public static void SetCapacity(string node, double cpus, long memoryBytes, int gpus, long? diskBytes = null)
    {
        CapacityCpus.WithLabels(node).Set(cpus);
        CapacityMemoryBytes.WithLabels(node).Set(memoryBytes);
        CapacityGpus.WithLabels(node).Set(gpus);
        if (diskBytes is { } disk) CapacityDiskBytes.WithLabels(node).Set(disk);
    }

    /// <summary>What the jobs admitted to <paramref name="node"/> requested, in total.</summary>
    public static void SetAllocated(string node, double cpus, long memoryBytes, int gpus, long diskBytes = 0)
    {
        AllocatedCpus.WithLabels(node).Set(cpus);
        AllocatedMemoryBytes.WithLabels(node).Set(memoryBytes);
        AllocatedGpus.WithLabels(node).Set(gpus);
        AllocatedDiskBytes.WithLabels(node).Set(diskBytes);
    }

    /// <summary>The data directory's free space, its reserve, and whether it is below it.</summary>
    public static void SetDisk(string node, long freeBytes, long reserveBytes, bool underReserve)
    {
        DiskFreeBytes.WithLabels(node).Set(freeBytes);
        DiskReserveBytes.WithLabels(node).Set(reserveBytes);
        DiskPressure.WithLabels(node).Set(underReserve ? 1 : 0);
    }

    /// <summary>Removes every series of a node that left the cluster.</summary>
    public static void Remove(string node)
    {
        foreach (var g in new[] { CapacityCpus, CapacityMemoryBytes, CapacityGpus, AllocatedCpus, AllocatedMemoryBytes, AllocatedGpus,
                     CapacityDiskBytes, AllocatedDiskBytes, DiskFreeBytes, DiskReserveBytes, DiskPressure })
            g.RemoveLabelled(node);
    }
}
