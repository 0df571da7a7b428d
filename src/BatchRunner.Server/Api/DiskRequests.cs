using BatchRunner.Core;
using BatchRunner.Server.Hosting;

namespace BatchRunner.Server.Api;

/// <summary>resources.disk as the API settles it at submission: this node's default for a job that names none
/// (stored with the job, so every node grants the same), and never more than its maximum.</summary>
public static class DiskRequests
{
    /// <returns>The spec with its disk set, or the error naming resources.disk.</returns>
    public static (JobSpec Spec, string? Error) Settle(JobSpec spec, DiskOptions disk)
    {
        var bytes = spec.Resources.DiskBytes > 0 ? spec.Resources.DiskBytes : disk.DefaultBytes();
        if (disk.MaxBytes() is { } max && bytes > max)
            return (spec, $"{Quantity.Human(bytes)} disk requested; the most a job may have is {Quantity.Human(max)} (BatchRunner:Disk:Max)");
        return (spec with { Resources = spec.Resources with { DiskBytes = bytes } }, null);
    }
}
