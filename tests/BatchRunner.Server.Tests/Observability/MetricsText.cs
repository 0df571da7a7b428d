using System.Globalization;
using System.Text.RegularExpressions;

namespace BatchRunner.Server.Tests.Observability;

/// <summary>A parsed Prometheus text exposition (what /metrics returns).</summary>
public sealed partial class MetricsText
{
    public sealed record Sample(string Name, IReadOnlyDictionary<string, string> Labels, double Value);

    /// <summary>Metric family name → type, from the <c># TYPE</c> lines (present even for a family without series).</summary>
    public Dictionary<string, string> Types { get; } = new(StringComparer.Ordinal);
    public List<Sample> Samples { get; } = [];
    public string Raw { get; }

    public MetricsText(string text)
    {
        Raw = text;
        foreach (var line in text.Split('\n'))
        {
            if (line.StartsWith("# TYPE ", StringComparison.Ordinal))
            {
                var parts = line.Split(' ');
                Types[parts[2]] = parts[3];
                continue;
            }
            if (line.Length == 0 || line[0] == '#') continue;
            var m = SampleLine().Match(line);
            if (!m.Success) throw new FormatException($"unparsable metrics line: {line}");
            var labels = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (Match l in LabelPair().Matches(m.Groups["labels"].Value))
                labels[l.Groups[1].Value] = Regex.Unescape(l.Groups[2].Value);
            Samples.Add(new Sample(m.Groups["name"].Value, labels, ParseValue(m.Groups["value"].Value)));
        }
    }

    /// <summary>BatchRunner's own samples (for timeout messages; the runtime's series are left out).</summary>
    public override string ToString() =>
        string.Join("\n", Raw.Split('\n').Where(l => l.StartsWith("batchrunner_", StringComparison.Ordinal) && !l.Contains("_bucket{", StringComparison.Ordinal)));

    public static async Task<MetricsText> ScrapeAsync(HttpClient http) => new(await http.GetStringAsync("/metrics"));

    public IEnumerable<Sample> Where(string name, params (string Label, string Value)[] labels) =>
        Samples.Where(s => s.Name == name && labels.All(l => s.Labels.TryGetValue(l.Label, out var v) && v == l.Value));

    /// <summary>Sample names with the histogram/summary suffixes mapped back to their family.</summary>
    public HashSet<string> NamesWithSamples()
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var s in Samples) names.Add(FamilyOf(s.Name));
        return names;
    }

    public string FamilyOf(string sampleName)
    {
        foreach (var suffix in new[] { "_bucket", "_sum", "_count" })
            if (sampleName.EndsWith(suffix, StringComparison.Ordinal) && Types.TryGetValue(sampleName[..^suffix.Length], out var t) && t is "histogram" or "summary")
                return sampleName[..^suffix.Length];
        return sampleName;
    }

    private static double ParseValue(string v) => v switch
    {
        "+Inf" => double.PositiveInfinity,
        "-Inf" => double.NegativeInfinity,
        "NaN" => double.NaN,
        _ => double.Parse(v, NumberStyles.Float, CultureInfo.InvariantCulture),
    };

    [GeneratedRegex(@"^(?<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?<labels>.*)\})?\s+(?<value>\S+)(\s+\d+)?$")]
    private static partial Regex SampleLine();

    [GeneratedRegex(@"([a-zA-Z_][a-zA-Z0-9_]*)=""((?:[^""\\]|\\.)*)""")]
    private static partial Regex LabelPair();
}
