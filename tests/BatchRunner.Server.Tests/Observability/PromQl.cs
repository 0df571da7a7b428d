using System.Text.RegularExpressions;

namespace BatchRunner.Server.Tests.Observability;

/// <summary>
/// Finds the metric names a PromQL expression (or a Grafana variable query) selects. Not a parser: it
/// removes what cannot be a metric name (string literals, label matchers, range and subquery brackets,
/// Grafana variables, grouping clauses, function and aggregation calls, keywords, numbers) and keeps the
/// remaining identifiers.
/// </summary>
public static partial class PromQl
{
    private static readonly HashSet<string> Keywords = new(StringComparer.Ordinal)
    {
        "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
        "inf", "nan", "Inf", "NaN", "atan2",
    };

    public static IReadOnlySet<string> MetricNames(string expr)
    {
        var s = expr;
        s = StringLiteral().Replace(s, " ");               // "..." '...' `...`
        s = LabelMatchers().Replace(s, " ");               // {job="x", queue=~"$queue"}
        s = GrafanaVariable().Replace(s, " 1 ");           // $__rate_interval, ${queue}, [[x]]
        s = Brackets().Replace(s, " ");                    // [5m], [1h:1m]
        s = GroupingClause().Replace(s, " ");              // by (le, queue), on(node) group_left(job_id)
        s = Duration().Replace(s, " ");                    // offset 5m
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (Match m in Identifier().Matches(s))
        {
            var id = m.Groups["id"].Value;
            var followedByParen = m.Groups["paren"].Success;
            if (followedByParen || Keywords.Contains(id)) continue;
            names.Add(id);
        }
        return names;
    }

    /// <summary>Grafana's <c>label_values(metric, label)</c> and <c>query_result(expr)</c> variable queries.</summary>
    public static IReadOnlySet<string> VariableQueryMetricNames(string query)
    {
        var lv = LabelValues().Match(query);
        if (lv.Success)
        {
            // label_values(label) names no metric; label_values(selector, label) selects one.
            var args = lv.Groups["args"].Value;
            var comma = args.LastIndexOf(',');
            return comma < 0 ? new HashSet<string>() : MetricNames(args[..comma]);
        }
        var qr = QueryResult().Match(query);
        if (qr.Success) return MetricNames(qr.Groups["expr"].Value);
        return MetricNames(query);
    }

    [GeneratedRegex(@"""(?:[^""\\]|\\.)*""|'(?:[^'\\]|\\.)*'|`[^`]*`")]
    private static partial Regex StringLiteral();

    [GeneratedRegex(@"\{[^{}]*\}")]
    private static partial Regex LabelMatchers();

    [GeneratedRegex(@"\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*|\[\[[^\]]*\]\]")]
    private static partial Regex GrafanaVariable();

    [GeneratedRegex(@"\[[^\[\]]*\]")]
    private static partial Regex Brackets();

    [GeneratedRegex(@"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")]
    private static partial Regex GroupingClause();

    [GeneratedRegex(@"\b\d+(\.\d+)?(ms|s|m|h|d|w|y)\b")]
    private static partial Regex Duration();

    [GeneratedRegex(@"(?<![A-Za-z0-9_:.])(?<id>[A-Za-z_:][A-Za-z0-9_:]*)(?<paren>\s*\()?")]
    private static partial Regex Identifier();

    [GeneratedRegex(@"^\s*label_values\s*\((?<args>.*)\)\s*$")]
    private static partial Regex LabelValues();

    [GeneratedRegex(@"^\s*query_result\s*\((?<expr>.*)\)\s*$")]
    private static partial Regex QueryResult();
}
