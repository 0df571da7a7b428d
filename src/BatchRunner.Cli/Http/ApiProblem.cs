using System.Net;
using System.Text.Json;

namespace BatchRunner.Cli.Http;

/// <summary>
/// Turns a failed HTTP answer into what the user reads: one line, plus the server's field errors of a 400
/// (RFC 7807 <c>errors</c>), each as "field: message".
/// </summary>
internal static class ApiProblem
{
    public static CliException ToException(HttpStatusCode status, string? contentType, string body, string method, string path, ServerContext server)
    {
        JsonElement? problem = null;
        if (contentType is not null && contentType.Contains("json", StringComparison.OrdinalIgnoreCase))
        {
            try { problem = JsonDocument.Parse(body).RootElement.Clone(); }
            catch (JsonException) { /* not the problem document it claims to be */ }
        }
        var title = Str(problem, "title");
        var detail = Str(problem, "detail");
        var code = (int)status;

        if (status == HttpStatusCode.Unauthorized)
            return new CliException(server.Settings.ApiKey is null
                ? $"{server.Settings.Url} needs an API key (401): pass --api-key, set {Connection.ServerSettings.ApiKeyVariable}, or run `batchrunner login`"
                : $"{server.Settings.Url} refused the API key from {server.Settings.ApiKeySource} (401 Unauthorized)");
        if (problem is null && status is HttpStatusCode.NotFound or HttpStatusCode.MethodNotAllowed)
            return new CliException($"{server.Settings.Url} has no {method} {path} ({code}): the server is older than this command; upgrade BatchRunner");

        var details = new List<string>();
        if (problem is { } p && p.TryGetProperty("errors", out var errors) && errors.ValueKind == JsonValueKind.Object)
            foreach (var field in errors.EnumerateObject())
                foreach (var message in field.Value.ValueKind == JsonValueKind.Array ? field.Value.EnumerateArray() : Enumerable.Repeat(field.Value, 1))
                    details.Add($"{field.Name}: {(message.ValueKind == JsonValueKind.String ? message.GetString() : message.GetRawText())}");

        string line;
        if (details.Count > 0)
            line = $"{title ?? "the request is invalid"} ({code})";
        else if (detail is not null)
            line = title is null ? $"{detail} ({code})" : $"{title}: {detail} ({code})";
        else if (title is not null)
            line = $"{title} ({code})";
        else
            line = $"{method} {path} failed: {code} {status}" + (body.Length > 0 ? ": " + Shorten(body) : "");
        return new CliException(line, details);
    }

    private static string? Str(JsonElement? e, string name) =>
        e is { ValueKind: JsonValueKind.Object } o && o.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    private static string Shorten(string body)
    {
        var oneLine = body.ReplaceLineEndings(" ").Trim();
        return oneLine.Length <= 200 ? oneLine : oneLine[..200] + "…";
    }
}
