using System.Text.Json;
using System.Text.Json.Nodes;

namespace BatchRunner.Cli.Jobs;

/// <summary>
/// A job file: YAML (<c>.yaml</c>, <c>.yml</c>) or JSON in the shape of <c>POST /api/v1/jobs</c>, plus one field of the
/// CLI's own, <c>inputs</c>: files and directories, relative to the job file, sent with the job (see <see cref="JobInputs"/>).
/// </summary>
internal sealed record JobFile(JsonObject Spec, IReadOnlyList<string> Inputs)
{
    public const string InputsField = "inputs";

    public static JobFile Load(string path)
    {
        var full = Path.GetFullPath(path);
        string text;
        try
        {
            text = File.ReadAllText(full);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CliException($"cannot read job file {path}: {e.Message}", exitCode: ExitCodes.Usage);
        }
        var root = IsJson(full, text) ? ParseJson(text, path) : YamlToJson.Convert(text, path);
        if (root is not JsonObject spec)
            throw new CliException($"{path}: a job file holds one object (the job spec), not {root?.GetValueKind().ToString().ToLowerInvariant() ?? "nothing"}", exitCode: ExitCodes.Usage);

        var inputs = new List<string>();
        if (spec.TryGetPropertyValue(InputsField, out var node))
        {
            spec.Remove(InputsField);
            var baseDir = Path.GetDirectoryName(full)!;
            IEnumerable<JsonNode?> items = node switch
            {
                JsonArray a => a,
                JsonValue v when v.GetValueKind() == JsonValueKind.String => [v],
                null => [],
                _ => throw new CliException($"{path}: \"inputs\" must be a list of paths (relative to the job file)", exitCode: ExitCodes.Usage),
            };
            foreach (var item in items)
            {
                if (item is not JsonValue iv || iv.GetValueKind() != JsonValueKind.String)
                    throw new CliException($"{path}: every entry of \"inputs\" must be a path string", exitCode: ExitCodes.Usage);
                inputs.Add(Path.GetFullPath(Path.Combine(baseDir, iv.GetValue<string>())));
            }
        }
        return new JobFile(spec, inputs);
    }

    private static bool IsJson(string path, string text) =>
        path.EndsWith(".json", StringComparison.OrdinalIgnoreCase)
        || (!path.EndsWith(".yaml", StringComparison.OrdinalIgnoreCase) && !path.EndsWith(".yml", StringComparison.OrdinalIgnoreCase) && text.TrimStart().StartsWith('{'));

    private static JsonNode? ParseJson(string text, string path)
    {
        try
        {
            return JsonNode.Parse(text, documentOptions: new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true });
        }
        catch (JsonException e)
        {
            throw new CliException($"{path}: not valid JSON at line {(e.LineNumber ?? 0) + 1}: {e.Message}", exitCode: ExitCodes.Usage);
        }
    }
}
