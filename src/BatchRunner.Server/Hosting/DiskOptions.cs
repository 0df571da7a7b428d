using BatchRunner.Core;

namespace BatchRunner.Server.Hosting;

/// <summary>Per-job disk limits (BatchRunner:Disk): what each job may write on this node's disk.</summary>
public sealed class DiskOptions
{
    /// <summary>Give every job a size-limited filesystem (a sparse ext4 image on a loop device) for its root layer and
    /// /outputs. False only where loop devices cannot be used: jobs then write to the data directory unbounded.</summary>
    public bool Enforce { get; set; } = true;

    /// <summary>resources.disk of a job that names none (a quantity).</summary>
    public string Default { get; set; } = "10Gi";

    /// <summary>The largest resources.disk this node's API accepts; unset: up to what a node offers.</summary>
    public string? Max { get; set; }

    /// <summary>Job disks of <see cref="Default"/>'s size kept made ahead, so that a job asking for the default gets its
    /// disk at once (about 7 ms of mkfs.ext4 and loop set-up saved per job), and up to twice as many released ones kept
    /// mounted and emptied in place for later jobs (Runtime/Disk/PooledDiskVolumes); 0: each disk is made when its job
    /// starts and unmounted when it ends.</summary>
    public int PoolSize { get; set; } = 2;

    public long DefaultBytes() => Parse(Default, "Default") ?? throw new InvalidOperationException("BatchRunner:Disk:Default must be set");

    public long? MaxBytes() => Parse(Max, "Max");

    public void Validate()
    {
        var def = DefaultBytes();
        if (PoolSize < 0) throw new InvalidOperationException("BatchRunner:Disk:PoolSize must be 0 or more");
        if (def < DiskLimits.MinDiskBytes) throw new InvalidOperationException($"BatchRunner:Disk:Default must be at least {Quantity.FormatBytes(DiskLimits.MinDiskBytes)}");
        if (MaxBytes() is { } max && max < def)
            throw new InvalidOperationException($"BatchRunner:Disk:Max ({Max}) is smaller than BatchRunner:Disk:Default ({Default})");
    }

    internal static long? Parse(string? text, string key) =>
        string.IsNullOrWhiteSpace(text) ? null
        : Quantity.TryParseBytes(text, out var b) && b > 0 ? b
        : throw new InvalidOperationException($"BatchRunner:{(key == "MinFreeDisk" ? "" : "Disk:")}{key} \"{text}\" is not a quantity");
}
