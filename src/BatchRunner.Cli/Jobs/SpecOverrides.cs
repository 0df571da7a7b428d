using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace BatchRunner.Cli.Jobs;

/// <summary>
/// <c>--set path=value</c> on a job spec: <c>resources.memory=2Gi</c>, <c>retry.limit=3</c>, <c>command[1]=-c</c>,
/// <c>env.SEED=7</c>. Missing objects on the path are created.
/// </summary>
/// <remarks>
/// Typing: a value that starts with <c>[</c> or <c>{</c> is JSON (<c>command=["python3","x.py"]</c>); else it is typed as a
/// plain YAML scalar (number, bool, null, string), except where a string is the only sensible type: inside the string
/// maps (<c>env</c>, <c>secretEnv</c>, <c>labels</c>, <c>nodeSelector</c>) and where the field already holds a string,
/// so <c>env.SEED=7</c> stays <c>"7"</c>.
/// </remarks>
internal static partial class SpecOverrides
{
    private static readonly HashSet<string> StringMaps = new(StringComparer.Ordinal) { "env", "secretEnv", "labels", "nodeSelector" };

    public static void Apply(JsonObject spec, IEnumerable<string> assignments)
    {
        foreach (var a in assignments) Apply(spec, a);
    }

    public static void Apply(JsonObject spec, string assignment)
    {
        var eq = assignment.IndexOf('=');
        if (eq <= 0) throw Usage($"--set \"{assignment}\": expected path=value, e.g. resources.memory=2Gi");
        var path = assignment[..eq].Trim();
        var text = assignment[(eq + 1)..];
        var segments = Parse(path, assignment);

        JsonNode parent = spec;
        for (int i = 0; i < segments.Count - 1; i++)
            parent = Child(parent, segments[i], segments[i + 1], assignment);
        var last = segments[^1];
        var existing = Get(parent, last);
        var forceString = existing is JsonValue v && v.GetValueKind() == JsonValueKind.String
            || (segments.Count == 2 && segments[0].Name is { } map && StringMaps.Contains(map));
        var value = forceString ? JsonValue.Create(text) : Typed(text, assignment);
        Set(parent, last, value, assignment);
    }

    private static JsonNode? Typed(string text, string assignment)
    {
        var t = text.TrimStart();
        if (t.StartsWith('[') || t.StartsWith('{'))
        {
            try { return JsonNode.Parse(text); }
            catch (JsonException e) { throw Usage($"--set \"{assignment}\": the value looks like JSON but is not valid: {e.Message}"); }
        }
        return YamlToJson.TypedScalar(text);
    }

    private sealed record Segment(string? Name, int? Index);

    private static List<Segment> Parse(string path, string assignment)
    {
        var segments = new List<Segment>();
        foreach (var part in path.Split('.'))
        {
            var m = SegmentPattern().Match(part);
            if (!m.Success) throw Usage($"--set \"{assignment}\": \"{part}\" is not a field name (letters, digits, _ and -, optionally [index])");
            segments.Add(new Segment(m.Groups[1].Value, null));
            foreach (Capture c in m.Groups[2].Captures) segments.Add(new Segment(null, int.Parse(c.Value.Trim('[', ']'))));
        }
        return segments;
    }

    private static JsonNode? Get(JsonNode parent, Segment s) => s.Name is { } name
        ? (parent as JsonObject)?[name]
        : parent is JsonArray a && s.Index < a.Count ? a[s.Index!.Value] : null;

    private static JsonNode Child(JsonNode parent, Segment s, Segment next, string assignment)
    {
        var existing = Get(parent, s);
        if (existing is JsonObject or JsonArray) return existing;
        if (existing is not null) throw Usage($"--set \"{assignment}\": \"{s.Name ?? $"[{s.Index}]"}\" holds a value, not an object");
        JsonNode created = next.Name is null ? new JsonArray() : new JsonObject();
        Set(parent, s, created, assignment);
        return created;
    }

    private static void Set(JsonNode parent, Segment s, JsonNode? value, string assignment)
    {
        if (s.Name is { } name)
        {
            if (parent is not JsonObject o) throw Usage($"--set \"{assignment}\": \"{name}\" is set on a list, not an object");
            o[name] = value;
            return;
        }
        if (parent is not JsonArray a) throw Usage($"--set \"{assignment}\": [{s.Index}] is set on an object, not a list");
        var i = s.Index!.Value;
        if (i < a.Count) a[i] = value;
        else if (i == a.Count) a.Add(value);
        else throw Usage($"--set \"{assignment}\": index {i} is past the end of a list of {a.Count}");
    }

    private static CliException Usage(string message) => new(message, exitCode: ExitCodes.Usage);

    [GeneratedRegex(@"^([A-Za-z_][A-Za-z0-9_\-]*)(\[[0-9]+\])*$")]
    private static partial Regex SegmentPattern();
}
