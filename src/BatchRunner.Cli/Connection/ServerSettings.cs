namespace BatchRunner.Cli.Connection;

/// <summary>
/// Where the server is and which key to send, with where each came from (for error messages). Precedence, highest
/// first: the <c>--url</c> / <c>--api-key</c> flags, then <c>BATCHRUNNER_URL</c> / <c>BATCHRUNNER_API_KEY</c>, then the
/// config file written by <c>batchrunner login</c>. The URL defaults to the server's own default listen address.
/// </summary>
internal sealed record ServerSettings(Uri Url, string UrlSource, string? ApiKey, string? ApiKeySource)
{
    public const string DefaultUrl = "http://127.0.0.1:8080";
    public const string UrlVariable = "BATCHRUNNER_URL";
    public const string ApiKeyVariable = "BATCHRUNNER_API_KEY";

    public static ServerSettings Resolve(string? urlFlag, string? apiKeyFlag, IReadOnlyDictionary<string, string?> env, string configPath)
    {
        // Read only when a flag or variable does not already answer.
        SavedLogin? saved = null;
        SavedLogin Saved() => saved ??= ConfigFile.Read(configPath) ?? new SavedLogin(null, null);

        (string Value, string Source) url =
            !string.IsNullOrWhiteSpace(urlFlag) ? (urlFlag, "--url")
            : env.GetValueOrDefault(UrlVariable) is { Length: > 0 } u ? (u, UrlVariable)
            : Saved().Url is { Length: > 0 } s ? (s, configPath)
            : (DefaultUrl, "the default");
        (string? Value, string? Source) key =
            !string.IsNullOrWhiteSpace(apiKeyFlag) ? (apiKeyFlag, "--api-key")
            : env.GetValueOrDefault(ApiKeyVariable) is { Length: > 0 } k ? (k, ApiKeyVariable)
            : Saved().ApiKey is { Length: > 0 } sk ? (sk, configPath)
            : (null, null);
        return new ServerSettings(ParseUrl(url.Value, url.Source), url.Source, key.Value?.Trim(), key.Source);
    }

    public static Uri ParseUrl(string value, string source)
    {
        var text = value.Trim();
        if (!text.Contains("://", StringComparison.Ordinal)) text = "http://" + text;
        if (!Uri.TryCreate(text, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https"))
            throw new CliException($"server URL \"{value}\" (from {source}) is not an http(s) URL, e.g. http://127.0.0.1:8080");
        // A base ending in "/" keeps a path prefix (a server behind a reverse proxy at /batchrunner/).
        return uri.AbsolutePath.EndsWith('/') ? uri : new Uri(uri + "/");
    }
}
