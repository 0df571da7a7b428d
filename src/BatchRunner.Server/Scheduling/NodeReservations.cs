using BatchRunner.Core;
using BatchRunner.Runtime.Gpus;
using BatchRunner.Server.Observability;
using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Scheduling;

/// <summary>A job's hold on its node: the amounts counted against the node's capacity and the GPUs that are its alone.</summary>
public sealed record Reservation(Guid JobId, ResourceAmounts Amounts, IReadOnlyList<Gpu> Gpus);

/// <summary>
/// This worker's capacity and what its attempts hold of it: CPUs, memory, GPUs and disk are reserved together or not
/// at all, so the node never over-commits, and each GPU goes to at most one job. Disk is also held to what the data
/// directory has free now (<see cref="NodeDisk"/>), and nothing is reserved while its free space is below the
/// reserve. The one writer of the node's capacity and allocation series (<see cref="NodeMetrics"/>).
/// </summary>
/// <remarks>
/// Lifecycle: <see cref="TryReserve"/> before the attempt begins (null: not now, the job waits or goes back to
/// its queue); <see cref="Release"/> when the attempt is over, on every exit path. Release is idempotent, so a
/// <c>finally</c> may call it whatever happened. State lives only as long as the worker process, which is right:
/// a crashed worker's containers are killed (watchdog) and removed (janitor) before its successor takes jobs, so
/// a fresh process starts with everything free.
/// </remarks>
public sealed class NodeReservations
{
    private readonly Lock _lock = new();
    private readonly Dictionary<Guid, Reservation> _held = [];
    private readonly Dictionary<string, Guid> _gpuHolders = new(StringComparer.Ordinal);
    private readonly NodeDisk? _disk;
    private TaskCompletionSource _released = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private long _releases;

    /// <param name="capacity">CPUs and memory offered to jobs; its GPU count and models are taken from <paramref name="gpus"/>,
    /// its disk from <paramref name="disk"/>.</param>
    /// <param name="disk">The data directory; null: disk is neither counted nor watched (unit tests of other resources).</param>
    public NodeReservations(string nodeName, NodeCapacity capacity, IReadOnlyList<Gpu> gpus, NodeDisk? disk = null)
    {
        if (gpus.Select(g => g.Uuid).Distinct(StringComparer.Ordinal).Count() != gpus.Count)
            throw new ArgumentException("GPU UUIDs must be unique", nameof(gpus));
        NodeName = nodeName;
        Gpus = gpus.OrderBy(g => g.Index).ToList();
        _disk = disk;
        Capacity = capacity with
        {
            Gpus = Gpus.Count,
            GpuModels = Gpus.Select(g => g.Model).Distinct().ToList(),
            DiskBytes = disk is { LimitsJobs: true } ? disk.Read().CapacityBytes : null,
        };
        NodeMetrics.SetCapacity(NodeName, Capacity.Cpus, Capacity.MemoryBytes, Capacity.Gpus, Capacity.DiskBytes);
        Publish(ResourceAmounts.Zero);
    }

    public string NodeName { get; }

    /// <summary>What the node offers, as its record publishes it.</summary>
    public NodeCapacity Capacity { get; }

    /// <summary>Every GPU of the node, by index.</summary>
    public IReadOnlyList<Gpu> Gpus { get; }

    /// <summary>This node as <see cref="NodeFit"/> sees it, with the model of each GPU.</summary>
    public NodeOffer Offer(IReadOnlyDictionary<string, string> labels) => new(NodeName, Capacity, labels, Gpus.Select(g => g.Model).ToList());

    /// <summary>Reserved now, in total.</summary>
    public ResourceAmounts Allocated
    {
        get { lock (_lock) return Sum(); }
    }

    /// <summary>Jobs holding a reservation.</summary>
    public IReadOnlyList<Guid> Jobs
    {
        get { lock (_lock) return _held.Keys.ToList(); }
    }

    /// <summary>
    /// Reserves <paramref name="request"/>'s CPUs, memory, disk and GPUs (lowest free index first, of a model containing
    /// <see cref="ResourceRequest.GpuModel"/>) for <paramref name="jobId"/>, all or nothing; null when they are not
    /// all free now, or when the data directory is below its free-space reserve. Asking again for a job that holds a
    /// reservation returns it.
    /// </summary>
    public Reservation? TryReserve(Guid jobId, ResourceRequest request)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(request.Gpus);
        // Read before the lock: a statvfs is cheap, but no I/O is done while holding it.
        var disk = _disk?.Read();
        Reservation reservation;
        lock (_lock)
        {
            if (_held.TryGetValue(jobId, out var held)) return held;
            var amounts = ResourceAmounts.Of(request);
            var total = Sum() + amounts;
            if (!total.FitsWithin(ResourceAmounts.Of(Capacity))) return null;
            if (DiskShortage(disk, total.DiskBytes, amounts.DiskBytes) is not null) return null;
            var gpus = Gpus.Where(g => !_gpuHolders.ContainsKey(g.Uuid) && GpuCapacity.ModelMatches(g.Model, request.GpuModel)).Take(request.Gpus).ToList();
            if (gpus.Count < request.Gpus) return null;
            reservation = new Reservation(jobId, amounts, gpus);
            _held[jobId] = reservation;
            foreach (var g in gpus) _gpuHolders[g.Uuid] = jobId;
            Publish(Sum());
        }
        return reservation;
    }

    /// <summary>Gives the job's reservation back. Idempotent; false when the job held none.</summary>
    public bool Release(Guid jobId)
    {
        TaskCompletionSource released;
        lock (_lock)
        {
            if (!_held.Remove(jobId, out var held)) return false;
            foreach (var g in held.Gpus) _gpuHolders.Remove(g.Uuid);
            Publish(Sum());
            released = _released;
            _released = new(TaskCreationOptions.RunContinuationsAsynchronously);
            Interlocked.Increment(ref _releases);
        }
        released.TrySetResult();
        return true;
    }

    /// <summary>True when the smallest job a spec may ask for (0.01 CPU, 4Mi) could start here now: worth fetching one.</summary>
    public bool HasRoom => HasRoomBeyond([]);

    /// <summary>
    /// As <see cref="HasRoom"/>, with <paramref name="notYetReserved"/> counted as reserved too: jobs fetched for this node
    /// that will ask for these amounts (those that hold a reservation by now are counted once, as theirs).
    /// </summary>
    public bool HasRoomBeyond(IEnumerable<(Guid? JobId, ResourceAmounts Amounts)> notYetReserved)
    {
        var disk = _disk?.Read();
        lock (_lock)
        {
            var reserved = Sum();
            var pending = ResourceAmounts.Zero;
            foreach (var (jobId, amounts) in notYetReserved)
                if (jobId is not { } id || !_held.ContainsKey(id)) pending += amounts;
            var free = ResourceAmounts.Of(Capacity) - reserved - pending;
            // Disk as TryReserve counts it: the jobs' volumes against what the data directory has free now.
            var diskRoom = disk is null || Capacity.DiskBytes is null || pending.DiskBytes == 0
                || disk.AvailableBytes - reserved.DiskBytes - pending.DiskBytes >= DiskLimits.MinDiskBytes;
            return free.Cpus >= 0.01 - ResourceAmounts.CpuTolerance && free.MemoryBytes >= JobDefaults.MinMemoryBytes && diskRoom;
        }
    }

    /// <summary>How many reservations were released so far: what was free changed since a reading when this did.</summary>
    public long Releases => Interlocked.Read(ref _releases);

    /// <summary>Completes the next time a reservation is released (or when <paramref name="timeout"/> passes).</summary>
    public async Task WaitForReleaseAsync(TimeSpan timeout, CancellationToken ct)
    {
        Task released;
        lock (_lock) released = _released.Task;
        await Task.WhenAny(released, Task.Delay(timeout, ct));
    }

    /// <summary>Why a job asking <paramref name="request"/> cannot be reserved here now for lack of disk, in words, as
    /// <see cref="TryReserve"/> decides it; null when its disk fits (or disk is neither counted nor watched here).</summary>
    public string? DiskShortFor(ResourceRequest request)
    {
        var disk = _disk?.Read();
        lock (_lock) return DiskShortage(disk, Sum().DiskBytes + request.DiskBytes, request.DiskBytes);
    }

    /// <summary>
    /// The one disk rule of a reservation: nothing while the data directory is below its reserve, and, where jobs' disks
    /// are limited, the disks reserved (<paramref name="totalBytes"/>, the job's <paramref name="requestBytes"/> included)
    /// within what the data directory has free above the reserve. Returns why not, or null.
    /// </summary>
    private string? DiskShortage(DiskStatus? disk, long totalBytes, long requestBytes)
    {
        if (disk is null) return null;
        if (disk.Pressure is { } pressure) return pressure;
        if (Capacity.DiskBytes is null || totalBytes <= disk.AvailableBytes) return null;
        return $"its jobs' disks ({Quantity.Human(totalBytes - requestBytes)}) and this one ({Quantity.Human(requestBytes)}) need more than the " +
               $"{Quantity.Human(disk.AvailableBytes)} {disk.DataDir} has for jobs (free space above the reserve MinFreeDisk={Quantity.Human(disk.ReserveBytes)})";
    }

    /// <summary>GPUs free now, optionally of one model.</summary>
    public int FreeGpus(string? model = null)
    {
        lock (_lock) return Gpus.Count(g => !_gpuHolders.ContainsKey(g.Uuid) && GpuCapacity.ModelMatches(g.Model, model));
    }

    /// <summary>Current GPU holders, GPU UUID → job.</summary>
    public IReadOnlyDictionary<string, Guid> GpuAssignments()
    {
        lock (_lock) return new Dictionary<string, Guid>(_gpuHolders, StringComparer.Ordinal);
    }

    private ResourceAmounts Sum()
    {
        var sum = ResourceAmounts.Zero;
        foreach (var r in _held.Values) sum += r.Amounts;
        return sum;
    }

    // Called under the lock, so the series always show a state the reservations were in.
    private void Publish(ResourceAmounts allocated) =>
        NodeMetrics.SetAllocated(NodeName, Math.Round(allocated.Cpus, 6), allocated.MemoryBytes, allocated.Gpus, allocated.DiskBytes);
}
