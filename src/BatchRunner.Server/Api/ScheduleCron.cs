using Cronos;

namespace BatchRunner.Server.Api;

/// <summary>
/// A schedule's <c>cron</c> and <c>timeZone</c>, read as Hangfire reads them (its recurring jobs fire them): 5 fields, or
/// 6 with seconds first, or a macro such as <c>@daily</c> (Cronos, the parser Hangfire embeds); an IANA or Windows time zone id.
/// </summary>
public static class ScheduleCron
{
    public static CronExpression? TryParse(string? cron, out string? error)
    {
        error = null;
        if (string.IsNullOrWhiteSpace(cron))
        {
            error = "cron is required, e.g. \"0 3 * * *\" (daily at 03:00) or \"*/10 * * * * *\" (every 10 seconds)";
            return null;
        }
        var format = CronFormat.Standard;
        if (!cron.StartsWith('@'))
        {
            var parts = cron.Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries).Length;
            if (parts == 6) format |= CronFormat.IncludeSeconds;
            else if (parts != 5)
            {
                error = $"cron \"{cron}\" has {parts} fields: use 5 (minute hour day month weekday) or 6 (seconds first)";
                return null;
            }
        }
        try
        {
            return CronExpression.Parse(cron, format);
        }
        catch (CronFormatException e)
        {
            error = $"cron \"{cron}\" is not a valid expression: {e.Message}";
            return null;
        }
    }

    public static TimeZoneInfo? TryTimeZone(string? id, out string? error)
    {
        error = null;
        try
        {
            return TimeZoneInfo.FindSystemTimeZoneById(string.IsNullOrWhiteSpace(id) ? "UTC" : id);
        }
        catch (Exception e) when (e is TimeZoneNotFoundException or InvalidTimeZoneException)
        {
            error = $"unknown time zone \"{id}\": use an IANA name such as \"Europe/Paris\" or \"UTC\"";
            return null;
        }
    }

    /// <summary>When <paramref name="cron"/> fires next in <paramref name="zone"/>, after now; null when never.</summary>
    public static DateTimeOffset? NextRun(string cron, string zone) =>
        TryParse(cron, out _) is { } c && TryTimeZone(zone, out _) is { } tz && c.GetNextOccurrence(DateTimeOffset.UtcNow, tz) is { } next ? next : null;
}
