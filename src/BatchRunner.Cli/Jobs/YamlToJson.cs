using System.Globalization;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace BatchRunner.Cli.Jobs;

/// <summary>
/// YAML to the JSON the API takes. Plain scalars are typed as YAML 1.2's core schema types them (<c>1</c> a number,
/// <c>true</c> a bool, <c>null</c>/<c>~</c> null); quoted scalars and block text stay strings, so <c>"42"</c> is a string.
/// </summary>
internal static partial class YamlToJson
{
    public static JsonNode? Convert(string yaml, string source)
    {
        var stream = new YamlStream();
        try
        {
            stream.Load(new StringReader(yaml));
        }
        catch (YamlException e)
        {
            throw new CliException($"{source}: not valid YAML at line {e.Start.Line}, column {e.Start.Column}: {e.InnerException?.Message ?? e.Message}", exitCode: ExitCodes.Usage);
        }
        if (stream.Documents.Count != 1) throw new CliException($"{source}: expected one YAML document, found {stream.Documents.Count}", exitCode: ExitCodes.Usage);
        return Node(stream.Documents[0].RootNode, source);
    }

    private static JsonNode? Node(YamlNode node, string source) => node switch
    {
        YamlMappingNode map => Map(map, source),
        YamlSequenceNode seq => new JsonArray(seq.Children.Select(c => Node(c, source)).ToArray()),
        YamlScalarNode scalar => Scalar(scalar),
        _ => throw new CliException($"{source}: line {node.Start.Line}: YAML aliases and tags are not supported in job files", exitCode: ExitCodes.Usage),
    };

    private static JsonObject Map(YamlMappingNode map, string source)
    {
        var obj = new JsonObject();
        foreach (var (k, v) in map.Children)
        {
            if (k is not YamlScalarNode { Value: { } key })
                throw new CliException($"{source}: line {k.Start.Line}: a key must be a plain string", exitCode: ExitCodes.Usage);
            if (obj.ContainsKey(key))
                throw new CliException($"{source}: line {k.Start.Line}: \"{key}\" appears twice", exitCode: ExitCodes.Usage);
            obj[key] = Node(v, source);
        }
        return obj;
    }

    private static JsonNode? Scalar(YamlScalarNode s)
    {
        var v = s.Value ?? "";
        if (s.Style != ScalarStyle.Plain) return JsonValue.Create(v);
        return TypedScalar(v);
    }

    /// <summary>A plain (unquoted) value typed as YAML 1.2 and <c>--set</c> type it: null, bool, integer, float, else a string.</summary>
    public static JsonNode? TypedScalar(string v)
    {
        if (v is "" or "~" or "null" or "Null" or "NULL") return null;
        if (v is "true" or "True" or "TRUE") return JsonValue.Create(true);
        if (v is "false" or "False" or "FALSE") return JsonValue.Create(false);
        if (IntegerPattern().IsMatch(v) && long.TryParse(v, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var l)) return JsonValue.Create(l);
        if (FloatPattern().IsMatch(v) && double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out var d)) return JsonValue.Create(d);
        return JsonValue.Create(v);
    }

    [GeneratedRegex(@"^[-+]?[0-9]+$")]
    private static partial Regex IntegerPattern();

    [GeneratedRegex(@"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")]
    private static partial Regex FloatPattern();
}
