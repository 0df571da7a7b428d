using System.Text.Json;

namespace BatchRunner.Core;

public static partial class JobSpecValidator
{
    // The shape only; the node's default and maximum are applied by the API, which knows its settings.
    static partial void ValidateDisk(JobSubmission s, Action<string, string> add, ref JobSpec spec)
    {
        if (s.Resources?.Disk is not { } d || d.ValueKind == JsonValueKind.Null) return;
        if (!TryMemory(d, out var bytes, out var why))
        {
            add("resources.disk", why.Replace("memory", "disk"));
            return;
        }
        if (bytes < DiskLimits.MinDiskBytes)
        {
            add("resources.disk", $"disk must be at least {Quantity.FormatBytes(DiskLimits.MinDiskBytes)}");
            return;
        }
        spec = spec with { Resources = spec.Resources with { DiskBytes = bytes } };
    }
}
