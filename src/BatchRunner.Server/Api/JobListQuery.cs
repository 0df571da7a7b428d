using System.Globalization;
using System.Text.RegularExpressions;
using BatchRunner.Core;
using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Api;

/// <summary>
/// The query of <c>GET /api/v1/jobs</c>, read into a <see cref="JobFilter"/>: every filter narrows, none is ever
/// ignored, and a value that cannot be read is a <c>400</c> naming the parameter (a filter that silently matched
/// everything is how a script cancels everyone's jobs).
/// </summary>
public static partial class JobListQuery
{
    public const string SummaryView = "summary";
    public const string FullView = "full";
    public const int MaxLabelFilters = 16;

    // RFC 3339: a date-time with an offset or Z, or a full date (midnight UTC).
    [GeneratedRegex(@"^\d{4}-\d{2}-\d{2}([Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2}))?$")]
    private static partial Regex Rfc3339();

    /// <summary>The filter, or the errors (parameter → messages) when some value cannot be read.</summary>
    public static (JobFilter? Filter, Dictionary<string, string[]> Errors) Read(
        string? state, string? name, string[]? label, string? since, string? until, string? queue, string? schedule = null)
    {
        var errors = new Dictionary<string, string[]>();
        var states = new List<string>();
        if (state is not null)
        {
            foreach (var s in state.Split(',', StringSplitOptions.TrimEntries))
            {
                if (!JobState.IsKnown(s)) { errors["state"] = [$"unknown state \"{s}\"; one or more of {string.Join(", ", JobState.All)}, comma-separated"]; break; }
                if (!states.Contains(s)) states.Add(s);
            }
        }

        var prefix = false;
        if (name is not null)
        {
            var star = name.IndexOf('*');
            if (name.Length == 0 || name == "*") errors["name"] = ["name must be a job name, or the start of one followed by * (train-*)"];
            else if (star >= 0 && star != name.Length - 1) errors["name"] = ["* is only allowed at the end of name (a prefix: train-*)"];
            else if (star > 0) { prefix = true; name = name[..^1]; }
        }

        var labels = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var l in label ?? [])
        {
            var eq = l.IndexOf('=');
            if (eq <= 0) { errors["label"] = [$"label \"{l}\" must be key=value (repeat label for several; all must match)"]; break; }
            var (k, v) = (l[..eq], l[(eq + 1)..]);
            if (labels.TryGetValue(k, out var other) && other != v) { errors["label"] = [$"label {k} is asked to be both \"{other}\" and \"{v}\": no job matches"]; break; }
            labels[k] = v;
        }
        if (labels.Count > MaxLabelFilters) errors["label"] = [$"at most {MaxLabelFilters} label filters"];

        var from = Time("since", since, errors);
        var to = Time("until", until, errors);
        if (from is { } a && to is { } b && b <= a) errors["until"] = ["until must be later than since"];

        if (queue is { Length: 0 }) errors["queue"] = ["queue must name a queue"];

        Guid? scheduleId = null;
        if (schedule is not null)
        {
            if (Guid.TryParse(schedule, out var sid)) scheduleId = sid;
            else errors["schedule"] = [$"\"{schedule}\" is not a schedule id"];
        }

        return errors.Count > 0 ? (null, errors) : (new JobFilter
        {
            States = states,
            Name = name,
            NameIsPrefix = prefix,
            Labels = labels,
            Since = from,
            Until = to,
            Queue = queue,
            Schedule = scheduleId,
        }, errors);
    }

    /// <summary>True for the summary view; null (with an error) for a view that does not exist.</summary>
    public static bool? Summary(string? view, Dictionary<string, string[]> errors)
    {
        switch (view)
        {
            case null or FullView: return false;
            case SummaryView: return true;
            default:
                errors["view"] = [$"view must be {FullView} (the default: every field of a job) or {SummaryView} (without command, args, env and outputs)"];
                return null;
        }
    }

    private static DateTimeOffset? Time(string field, string? text, Dictionary<string, string[]> errors)
    {
        if (text is null) return null;
        if (Rfc3339().IsMatch(text) && DateTimeOffset.TryParse(text, CultureInfo.InvariantCulture,
                DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal, out var t))
            return t;
        errors[field] = [$"\"{text}\" is not an RFC 3339 time: use 2025-01-31T12:00:00Z, 2025-01-31T13:00:00+01:00 or 2025-01-31"];
        return null;
    }
}
