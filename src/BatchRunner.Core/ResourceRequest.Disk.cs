using System.Text.Json;

namespace BatchRunner.Core;

public sealed partial record ResourceRequest
{
    /// <summary>
    /// What the job may write on its node's disk: its writable root layer and /outputs together, enforced by the
    /// kernel (a filesystem of this size). Set at submission (the API node's default when the job names none);
    /// 0 in jobs stored before disk limits existed, which get the running node's default.
    /// </summary>
    public long DiskBytes { get; init; }
}

public sealed partial record ResourceSubmission
{
    /// <summary>A quantity string ("10Gi") or a JSON integer of bytes; omitted: the node's default.</summary>
    public JsonElement? Disk { get; init; }
}

public static class DiskLimits
{
    /// <summary>Below this a job's root layer and outputs hold too little to be worth a filesystem.</summary>
    public const long MinDiskBytes = 1L << 20;
}
