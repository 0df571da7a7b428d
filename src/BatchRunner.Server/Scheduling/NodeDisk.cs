using BatchRunner.Core;
using BatchRunner.Runtime.Disk;

namespace BatchRunner.Server.Scheduling;

/// <summary>
/// This node's data directory as admission sees it: its filesystem's size and free space, the reserve
/// (<c>MinFreeDisk</c>) that keeps the embedded PostgreSQL, logs and image pulls writable, and what the running jobs'
/// volumes hold of it. Read fresh (one statvfs) whenever asked.
/// </summary>
/// <remarks>
/// Two figures come out of it. <see cref="DiskStatus.CapacityBytes"/> (the filesystem less the reserve) is what the
/// node offers at most, the disk of <see cref="NodeFit"/>: a job asking more can never run here. <see cref="DiskStatus.AvailableBytes"/>
/// is what jobs may be granted now: the free space, plus what running jobs' volumes already hold (their grants are
/// counted whole by <see cref="NodeReservations"/>), less the reserve. Below the reserve no job starts at all.
/// </remarks>
public sealed class NodeDisk
{
    /// <summary>The default reserve: the larger of this share of the filesystem and <see cref="DefaultMinFreeFloorBytes"/>.</summary>
    public const double DefaultMinFreeShare = 0.05;
    public const long DefaultMinFreeFloorBytes = 2L << 30;

    private readonly Func<string, FilesystemSpace> _read;
    private readonly long? _minFreeBytes;
    private readonly Lock _lock = new();
    private readonly Dictionary<object, Func<long>> _volumes = [];

    /// <param name="dataDir">The data directory (job volumes, outputs, logs, images, the embedded PostgreSQL).</param>
    /// <param name="minFreeBytes">The reserve; null: the larger of 5% of the filesystem and 2 GiB.</param>
    /// <param name="limitsJobs">False when this node does not give jobs size-limited volumes (Disk:Enforce=false):
    /// disk is then not counted at admission, though the reserve still stops new jobs.</param>
    public NodeDisk(string dataDir, long? minFreeBytes, bool limitsJobs = true, Func<string, FilesystemSpace>? read = null)
    {
        DataDir = dataDir;
        _minFreeBytes = minFreeBytes;
        LimitsJobs = limitsJobs;
        _read = read ?? HostDisk.Read;
    }

    public string DataDir { get; }
    public bool LimitsJobs { get; }

    /// <summary>A reading now.</summary>
    public DiskStatus Read()
    {
        var space = _read(DataDir);
        long jobs;
        lock (_lock) jobs = _volumes.Values.Sum(used => Math.Max(0, used()));
        var reserve = _minFreeBytes ?? Math.Max((long)(space.TotalBytes * DefaultMinFreeShare), DefaultMinFreeFloorBytes);
        return new DiskStatus(DataDir, space.TotalBytes, space.AvailableBytes, reserve, jobs);
    }

    /// <summary>Why writing about <paramref name="bytes"/> more (an image pull or import) would cross the reserve; null when
    /// there is room.</summary>
    public string? WhyNoRoomFor(long bytes)
    {
        var now = Read();
        return now.FreeBytes - bytes >= now.ReserveBytes ? null
            : $"not enough disk space: it needs about {Quantity.Human(bytes)}, {DataDir} has {Quantity.Human(now.FreeBytes)} free " +
              $"and keeps {Quantity.Human(now.ReserveBytes)} free (MinFreeDisk)";
    }

    /// <summary>Counts a running job's volume (<paramref name="usedBytes"/>: what it holds now) until disposed.</summary>
    public IDisposable Track(Func<long> usedBytes)
    {
        var key = new object();
        lock (_lock) _volumes[key] = usedBytes;
        return new Untrack(this, key);
    }

    private sealed class Untrack(NodeDisk disk, object key) : IDisposable
    {
        public void Dispose()
        {
            lock (disk._lock) disk._volumes.Remove(key);
        }
    }
}

/// <summary>One reading of the data directory's filesystem.</summary>
/// <param name="FreeBytes">What an unprivileged writer may still take (statvfs f_bavail).</param>
/// <param name="ReserveBytes">MinFreeDisk.</param>
/// <param name="JobsBytes">What running jobs' volumes hold now (part of the used space, already granted to them).</param>
public sealed record DiskStatus(string DataDir, long TotalBytes, long FreeBytes, long ReserveBytes, long JobsBytes)
{
    /// <summary>Free space is below the reserve: no new job starts on this node.</summary>
    public bool UnderReserve => FreeBytes < ReserveBytes;

    /// <summary>The most disk this node offers a job (nothing else running, nothing else stored): the filesystem less the reserve.</summary>
    public long CapacityBytes => Math.Max(0, TotalBytes - ReserveBytes);

    /// <summary>What jobs may be granted in all now: free space, plus what running jobs hold already, less the reserve.</summary>
    public long AvailableBytes => Math.Max(0, FreeBytes + JobsBytes - ReserveBytes);

    /// <summary>Why no job starts here, in words; null when jobs may start.</summary>
    public string? Pressure => UnderReserve
        ? $"free space on {DataDir} is {Quantity.Human(FreeBytes)}, below the reserve MinFreeDisk={Quantity.Human(ReserveBytes)}: no new jobs start until space is freed"
        : null;
}
