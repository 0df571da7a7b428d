using System.Collections;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using System.Text.Json.Serialization.Metadata;

namespace BatchRunner.Core;

/// <summary>
/// Reads a job submission (the JSON of <c>POST /api/v1/jobs</c>) by walking the document against the shape of
/// <see cref="JobSubmission"/>, so that every unknown or ill-typed field is reported at once, in the API's own terms
/// (<c>resources.memroy: unknown field (did you mean "memory"?)</c>, <c>command: expected an array of strings</c>)
/// instead of System.Text.Json's first exception, which names .NET types.
/// </summary>
/// <remarks>
/// The field table is the serializer's own contract of <see cref="JobSubmission"/> (names, types, nesting), so a
/// field added to the submission is known here without a second list to keep in step. What is well-formed is then
/// deserialized (the bad fields left out), so that the semantic validation can add its errors to the same answer.
/// </remarks>
public static class SubmissionShape
{
    /// <summary>How the API reads submissions: web names (camelCase, case-insensitive), no unknown members.</summary>
    public static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web)
    {
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
        TypeInfoResolver = new DefaultJsonTypeInfoResolver(),
    };

    /// <summary>The submission read from <paramref name="body"/>, leaving out what is malformed, and a message per bad field.</summary>
    /// <param name="root">The name of the whole document in errors ("body", or the multipart part "spec").</param>
    public static (JobSubmission? Submission, Dictionary<string, string[]> Errors) Read(JsonElement body, string root = "body") =>
        Read<JobSubmission>(body, root, "the job spec, with at least \"image\"");

    /// <summary>Any other request document of the API (an API key request, ...) read the same way: every unknown or
    /// ill-typed field named in the API's terms, and what is well-formed deserialized.</summary>
    /// <param name="what">What the document is, for the error when it is not an object at all.</param>
    public static (T? Value, Dictionary<string, string[]> Errors) Read<T>(JsonElement body, string root, string what) where T : class
    {
        var errors = new Dictionary<string, List<string>>();
        if (body.ValueKind != JsonValueKind.Object)
        {
            Add(errors, root, $"expected a JSON object: {what}");
            return (null, Freeze(errors));
        }
        JsonNode node;
        try { node = JsonNode.Parse(body.GetRawText())!; }
        catch (ArgumentException)
        {
            Add(errors, root, "a field is given twice");
            return (null, Freeze(errors));
        }
        WalkObject(body, node.AsObject(), Json.GetTypeInfo(typeof(T)), "", errors);
        T? value;
        try
        {
            value = node.Deserialize<T>(Json);
        }
        catch (JsonException e)
        {
            // Not expected once the walk passed: a shape the table does not describe. Say where, never in .NET's words.
            var path = string.IsNullOrEmpty(e.Path) ? root : e.Path.TrimStart('$', '.');
            Add(errors, path, "has the wrong type");
            value = null;
        }
        return (value, Freeze(errors));
    }

    /// <summary>Parses <paramref name="text"/> and reads it; text that is not JSON at all gets one error naming where it breaks.</summary>
    public static (JobSubmission? Submission, Dictionary<string, string[]> Errors) Read(string text, string root = "body")
    {
        try
        {
            using var doc = JsonDocument.Parse(text);
            return Read(doc.RootElement, root);
        }
        catch (JsonException e)
        {
            return (null, new() { [root] = [NotJson(e)] });
        }
    }

    /// <summary>"not valid JSON (line 1, column 3: ...)" from the reader's exception, without its .NET wording of paths.</summary>
    public static string NotJson(JsonException e)
    {
        var m = e.Message;
        var cut = m.IndexOf(" Path:", StringComparison.Ordinal);
        if (cut < 0) cut = m.IndexOf(" LineNumber:", StringComparison.Ordinal);
        var what = (cut > 0 ? m[..cut] : m).Trim().TrimEnd('.');
        var where = e.LineNumber is { } line ? $"line {line + 1}, column {(e.BytePositionInLine ?? 0) + 1}: " : "";
        return $"not valid JSON ({where}{what})";
    }

    // Walks one JSON object against a type's properties; a property that is malformed is removed from `node`.
    private static void WalkObject(JsonElement obj, JsonObject node, JsonTypeInfo type, string path, Dictionary<string, List<string>> errors)
    {
        var known = type.Properties.ToDictionary(p => p.Name, StringComparer.OrdinalIgnoreCase);
        foreach (var member in obj.EnumerateObject())
        {
            var field = Join(path, member.Name);
            if (!known.TryGetValue(member.Name, out var property))
            {
                Add(errors, field, UnknownField(member.Name, type, path));
                node.Remove(member.Name);
                continue;
            }
            if (!WalkValue(member.Value, node[member.Name], property.PropertyType, field, errors)) node.Remove(member.Name);
        }
    }

    // True when `value` fits `type` (an object whose bad members were removed from `node` fits); otherwise the errors
    // say why, at `path` or at an element or entry below it, and the caller removes the whole value.
    private static bool WalkValue(JsonElement value, JsonNode? node, Type type, string path, Dictionary<string, List<string>> errors)
    {
        if (value.ValueKind == JsonValueKind.Null) return true; // every submission field is optional: null is "not given"
        type = Nullable.GetUnderlyingType(type) ?? type;
        if (type == typeof(JsonElement)) return true; // several forms accepted ("64Mi" or 67108864): the validator judges
        var shape = Describe(type);
        switch (shape.Kind)
        {
            case Kind.Scalar:
                if (FitsScalar(value, type)) return true;
                Add(errors, path, $"expected {shape.Noun}{Got(value)}");
                return false;
            case Kind.Array:
                if (value.ValueKind != JsonValueKind.Array)
                {
                    Add(errors, path, $"expected {shape.Noun}{Got(value)}");
                    return false;
                }
                var ok = true;
                var i = 0;
                foreach (var item in value.EnumerateArray())
                {
                    var element = $"{path}[{i++}]";
                    if (item.ValueKind == JsonValueKind.Null) { Add(errors, element, $"expected {Describe(shape.Element!).Noun}, not null"); ok = false; }
                    else ok &= WalkValue(item, null, shape.Element!, element, errors);
                }
                return ok;
            case Kind.Map:
                if (value.ValueKind != JsonValueKind.Object)
                {
                    Add(errors, path, $"expected {shape.Noun}{Got(value)}");
                    return false;
                }
                var fine = true;
                foreach (var member in value.EnumerateObject())
                {
                    var entry = Join(path, member.Name);
                    if (member.Value.ValueKind == JsonValueKind.Null) { Add(errors, entry, $"expected {Describe(shape.Element!).Noun}, not null"); fine = false; }
                    else fine &= WalkValue(member.Value, null, shape.Element!, entry, errors);
                }
                return fine;
            default:
                if (value.ValueKind != JsonValueKind.Object)
                {
                    Add(errors, path, $"expected an object{Got(value)}");
                    return false;
                }
                // Bad members below are removed from the object itself: it stays, with what is right in it. (Inside an
                // array or map there is no node to prune: any error there drops the whole array or map.)
                if (node is JsonObject o) { WalkObject(value, o, Json.GetTypeInfo(type), path, errors); return true; }
                var before = errors.Count;
                WalkObject(value, new JsonObject(), Json.GetTypeInfo(type), path, errors);
                return errors.Count == before;
        }
    }

    private enum Kind { Scalar, Array, Map, Object }

    private sealed record Shape(Kind Kind, string Noun, Type? Element = null);

    private static Shape Describe(Type type)
    {
        type = Nullable.GetUnderlyingType(type) ?? type;
        if (type == typeof(string)) return new(Kind.Scalar, "a string");
        if (type == typeof(bool)) return new(Kind.Scalar, "true or false");
        if (type == typeof(int) || type == typeof(long)) return new(Kind.Scalar, "an integer");
        if (type == typeof(double) || type == typeof(float) || type == typeof(decimal)) return new(Kind.Scalar, "a number");
        if (type == typeof(JsonElement)) return new(Kind.Scalar, "a value");
        if (DictionaryValue(type) is { } v) return new(Kind.Map, $"an object of {Plural(Describe(v).Noun)} (name → value)", v);
        if (EnumerableElement(type) is { } e) return new(Kind.Array, $"an array of {Plural(Describe(e).Noun)}", e);
        return new(Kind.Object, "an object");
    }

    private static bool FitsScalar(JsonElement value, Type type)
    {
        if (type == typeof(string)) return value.ValueKind == JsonValueKind.String;
        if (type == typeof(bool)) return value.ValueKind is JsonValueKind.True or JsonValueKind.False;
        if (type == typeof(int)) return value.ValueKind == JsonValueKind.Number && value.TryGetInt32(out _);
        if (type == typeof(long)) return value.ValueKind == JsonValueKind.Number && value.TryGetInt64(out _);
        if (type == typeof(double) || type == typeof(float) || type == typeof(decimal)) return value.ValueKind == JsonValueKind.Number;
        return true;
    }

    private static Type? DictionaryValue(Type type)
    {
        foreach (var i in type.GetInterfaces().Append(type))
            if (i.IsGenericType && (i.GetGenericTypeDefinition() == typeof(IDictionary<,>) || i.GetGenericTypeDefinition() == typeof(IReadOnlyDictionary<,>))
                && i.GetGenericArguments()[0] == typeof(string))
                return i.GetGenericArguments()[1];
        return null;
    }

    private static Type? EnumerableElement(Type type)
    {
        if (type == typeof(string) || !typeof(IEnumerable).IsAssignableFrom(type)) return null;
        if (type.IsArray) return type.GetElementType();
        foreach (var i in type.GetInterfaces().Append(type))
            if (i.IsGenericType && i.GetGenericTypeDefinition() == typeof(IEnumerable<>)) return i.GetGenericArguments()[0];
        return null;
    }

    private static string Plural(string noun) => noun switch
    {
        "a string" => "strings",
        "true or false" => "true/false values",
        "an integer" => "integers",
        "a number" => "numbers",
        "an object" => "objects",
        "a value" => "values",
        _ => noun,
    };

    // What the user sent instead, briefly: a number where a string was expected says so, with the value when it is short.
    private static string Got(JsonElement value) => value.ValueKind switch
    {
        JsonValueKind.String => value.GetString()!.Length <= 40 ? $", not the string \"{value.GetString()}\"" : ", not a string",
        JsonValueKind.Number => value.GetRawText().Length <= 40 ? $", not the number {value.GetRawText()}" : ", not a number",
        JsonValueKind.True or JsonValueKind.False => $", not {value.GetRawText()}",
        JsonValueKind.Array => ", not an array",
        JsonValueKind.Object => ", not an object",
        _ => "",
    };

    private static string UnknownField(string name, JsonTypeInfo type, string path)
    {
        // A close name at this level first; then a field of the same name one level down ("memory" written at the
        // top instead of inside "resources").
        var here = type.Properties.Select(p => p.Name).ToList();
        var best = Closest(name, here);
        if (best is null)
        {
            foreach (var p in type.Properties)
            {
                var t = Nullable.GetUnderlyingType(p.PropertyType) ?? p.PropertyType;
                if (Describe(t).Kind != Kind.Object) continue;
                var below = Json.GetTypeInfo(t).Properties.Select(q => q.Name).ToList();
                if (Closest(name, below) is { } nested) { best = $"{Join(path, p.Name)}.{nested}"; break; }
            }
        }
        return best is null
            ? $"unknown field; known fields{(path.Length == 0 ? "" : $" of {path}")}: {string.Join(", ", here.Order(StringComparer.Ordinal))}"
            : $"unknown field (did you mean \"{best}\"?)";
    }

    /// <summary>The candidate within a small edit distance of <paramref name="name"/> (case-insensitive), or null.</summary>
    public static string? Closest(string name, IEnumerable<string> candidates)
    {
        var limit = Math.Max(1, Math.Min(3, name.Length / 3));
        string? best = null;
        var bestDistance = int.MaxValue;
        foreach (var c in candidates)
        {
            var d = EditDistance(name.ToLowerInvariant(), c.ToLowerInvariant());
            if (d <= limit && d < bestDistance) { best = c; bestDistance = d; }
        }
        return best;
    }

    /// <summary>Optimal string alignment distance: insertions, deletions, substitutions and swaps of neighbours cost 1.</summary>
    public static int EditDistance(string a, string b)
    {
        var d = new int[a.Length + 1, b.Length + 1];
        for (var i = 0; i <= a.Length; i++) d[i, 0] = i;
        for (var j = 0; j <= b.Length; j++) d[0, j] = j;
        for (var i = 1; i <= a.Length; i++)
        for (var j = 1; j <= b.Length; j++)
        {
            var cost = a[i - 1] == b[j - 1] ? 0 : 1;
            d[i, j] = Math.Min(Math.Min(d[i - 1, j] + 1, d[i, j - 1] + 1), d[i - 1, j - 1] + cost);
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) d[i, j] = Math.Min(d[i, j], d[i - 2, j - 2] + 1);
        }
        return d[a.Length, b.Length];
    }

    private static string Join(string path, string name) => path.Length == 0 ? name : $"{path}.{name}";

    private static void Add(Dictionary<string, List<string>> errors, string field, string message)
    {
        if (!errors.TryGetValue(field, out var list)) errors[field] = list = [];
        list.Add(message);
    }

    private static Dictionary<string, string[]> Freeze(Dictionary<string, List<string>> errors) =>
        errors.ToDictionary(e => e.Key, e => e.Value.ToArray());
}
