using System.Text;
using System.Text.Json;

namespace BatchRunner.Oci.Registry;

/// <summary>
/// Reads registry credentials from a Docker client config (~/.docker/config.json): the <c>auths</c> map,
/// with <c>auth</c> = base64("user:password") and/or <c>identitytoken</c>. Credential helpers
/// (<c>credsStore</c>, <c>credHelpers</c>) are not run. Merge the result into <see cref="ImageStoreOptions.Credentials"/>.
/// </summary>
public static class DockerConfigCredentials
{
    /// <summary>Loads credentials; a missing file gives none. Malformed files throw <see cref="FormatException"/>
    /// whose message never contains secrets.</summary>
    public static IReadOnlyList<RegistryCredential> Load(string path)
    {
        if (!File.Exists(path)) return [];
        return Parse(File.ReadAllText(path), path);
    }

    public static IReadOnlyList<RegistryCredential> Parse(string json, string source = "docker config")
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(json); }
        catch (JsonException e)
        {
            // e.Message can quote the offending text; report only the position.
            throw new FormatException($"{source} is not valid JSON (line {e.LineNumber + 1})");
        }
        using (doc)
        {
            var result = new List<RegistryCredential>();
            if (doc.RootElement.ValueKind != JsonValueKind.Object ||
                !doc.RootElement.TryGetProperty("auths", out var auths) || auths.ValueKind != JsonValueKind.Object)
                return result;

            foreach (var entry in auths.EnumerateObject())
            {
                if (entry.Value.ValueKind != JsonValueKind.Object) continue;
                string? user = null, password = null, identityToken = null;
                if (entry.Value.TryGetProperty("auth", out var auth) && auth.ValueKind == JsonValueKind.String && auth.GetString() is { Length: > 0 } b64)
                {
                    string decoded;
                    try { decoded = Encoding.UTF8.GetString(Convert.FromBase64String(b64)); }
                    catch (FormatException) { throw new FormatException($"{source}: auths.{entry.Name}.auth is not valid base64"); }
                    var colon = decoded.IndexOf(':');
                    if (colon < 0) throw new FormatException($"{source}: auths.{entry.Name}.auth is not user:password");
                    user = decoded[..colon];
                    password = decoded[(colon + 1)..];
                }
                else
                {
                    user = StringProp(entry.Value, "username");
                    password = StringProp(entry.Value, "password");
                }
                identityToken = StringProp(entry.Value, "identitytoken");
                if (user is null && password is null && identityToken is null) continue;
                result.Add(new RegistryCredential(NormalizeRegistry(entry.Name), user, password, identityToken));
            }
            return result;
        }
    }

    /// <summary>Docker writes keys like "https://index.docker.io/v1/" or "https://ghcr.io"; references use "docker.io" / "ghcr.io".</summary>
    public static string NormalizeRegistry(string key)
    {
        var host = key.Trim();
        var scheme = host.IndexOf("://", StringComparison.Ordinal);
        if (scheme >= 0) host = host[(scheme + 3)..];
        var slash = host.IndexOf('/');
        if (slash >= 0) host = host[..slash];
        return host.ToLowerInvariant() switch
        {
            "index.docker.io" or "registry-1.docker.io" or "registry.hub.docker.com" => "docker.io",
            var h => h,
        };
    }

    private static string? StringProp(JsonElement e, string name) =>
        e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String && v.GetString() is { Length: > 0 } s ? s : null;
}
