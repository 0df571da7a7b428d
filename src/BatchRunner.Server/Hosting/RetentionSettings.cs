using System.Globalization;
using System.Text.RegularExpressions;

namespace BatchRunner.Server.Hosting;

/// <summary>How long finished jobs are kept (configuration "BatchRunner:Retention").</summary>
public sealed partial class RetentionSettings
{
    /// <summary>A duration ("7d", "12h", "90m", "1d12h"); a finished job older than that is deleted with its files.
    /// Unset: finished jobs are kept until deleted (DELETE /api/v1/jobs/{id}).</summary>
    public string? FinishedJobs { get; set; }

    /// <summary>Seconds between sweeps: expired jobs, and the files of deleted jobs this node still holds.</summary>
    public int SweepSeconds { get; set; } = 60;

    /// <summary><see cref="FinishedJobs"/> as a time span; null when unset.</summary>
    /// <exception cref="InvalidOperationException">It is set but not a positive duration.</exception>
    public TimeSpan? FinishedJobsAge() =>
        string.IsNullOrWhiteSpace(FinishedJobs) ? null
        : TryParseDuration(FinishedJobs, out var d) && d > TimeSpan.Zero ? d
        : throw new InvalidOperationException($"BatchRunner:Retention:FinishedJobs \"{FinishedJobs}\" is not a duration such as 7d, 12h, 90m or 1d12h");

    public void Validate()
    {
        _ = FinishedJobsAge();
        if (SweepSeconds < 1) throw new InvalidOperationException("BatchRunner:Retention:SweepSeconds must be at least 1");
    }

    /// <summary>Days, hours, minutes and seconds, in that order, each optional ("7d", "1d12h", "45s").</summary>
    public static bool TryParseDuration(string text, out TimeSpan duration)
    {
        duration = default;
        var m = DurationPattern().Match(text.Trim());
        if (!m.Success || m.Length == 0) return false;
        double seconds = 0;
        foreach (var (group, unit) in new[] { ("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0) })
            if (m.Groups[group].Success) seconds += double.Parse(m.Groups[group].Value, CultureInfo.InvariantCulture) * unit;
        if (seconds > TimeSpan.MaxValue.TotalSeconds / 2) return false;
        duration = TimeSpan.FromSeconds(seconds);
        return true;
    }

    [GeneratedRegex(@"^(?:(?<d>[0-9]{1,6})d)?(?:(?<h>[0-9]{1,8})h)?(?:(?<m>[0-9]{1,9})m)?(?:(?<s>[0-9]{1,10})s)?$")]
    private static partial Regex DurationPattern();
}
