using System.Text;
using System.Text.Json;

namespace BatchRunner.Oci.Registry;

/// <summary>
/// Reads the registry credentials of a Docker client config (~/.docker/config.json): the <c>auths</c> map (<c>auth</c> =
/// base64("user:password"), or <c>username</c>/<c>password</c>, and/or <c>identitytoken</c>), the default credential
/// store <c>credsStore</c> and the per-registry <c>credHelpers</c>. Helpers are named here, not run: hand the
/// <see cref="DockerConfig"/> to a <see cref="DockerConfigCredentialSource"/>, which runs them when a pull needs
/// credentials (<see cref="CredentialHelper"/>).
/// </summary>
public static class DockerConfigCredentials
{
    /// <summary>Loads the config; a missing file gives an empty one. Malformed files throw <see cref="FormatException"/>
    /// whose message never contains secrets.</summary>
    public static DockerConfig Load(string path)
    {
        if (!File.Exists(path)) return DockerConfig.Empty;
        return Parse(File.ReadAllText(path), path);
    }

    public static DockerConfig Parse(string json, string source = "docker config")
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
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) return DockerConfig.Empty;
            var credsStore = StringProp(root, "credsStore");
            if (credsStore is not null) CheckHelperName(credsStore, $"{source}: credsStore");
            return new DockerConfig(ParseAuths(root, source), credsStore, ParseCredHelpers(root, source));
        }
    }

    private static List<RegistryCredential> ParseAuths(JsonElement root, string source)
    {
        var result = new List<RegistryCredential>();
        if (!root.TryGetProperty("auths", out var auths) || auths.ValueKind != JsonValueKind.Object) return result;
        foreach (var entry in auths.EnumerateObject())
        {
            if (entry.Value.ValueKind != JsonValueKind.Object) continue;
            string? user, password;
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
            var identityToken = StringProp(entry.Value, "identitytoken");
            // "docker login" with a credential store leaves an empty entry here: the secret is in the store.
            if (user is null && password is null && identityToken is null) continue;
            result.Add(new RegistryCredential(NormalizeRegistry(entry.Name), user, password, identityToken));
        }
        return result;
    }

    private static Dictionary<string, string> ParseCredHelpers(JsonElement root, string source)
    {
        var result = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        if (!root.TryGetProperty("credHelpers", out var helpers) || helpers.ValueKind != JsonValueKind.Object) return result;
        foreach (var entry in helpers.EnumerateObject())
        {
            if (entry.Value.ValueKind != JsonValueKind.String || entry.Value.GetString() is not { Length: > 0 } helper) continue;
            CheckHelperName(helper, $"{source}: credHelpers.{entry.Name}");
            result[NormalizeRegistry(entry.Name)] = helper;
        }
        return result;
    }

    // The name becomes part of a program name looked up on a search path: no path separators, no option-like names.
    private static void CheckHelperName(string name, string where)
    {
        if (name.StartsWith('.') || name.StartsWith('-') ||
            !name.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.'))
            throw new FormatException($"{where}: \"{name}\" is not a credential helper name (docker-credential-<name>)");
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

/// <summary>
/// What a Docker config says about registry credentials. Registry keys are normalized
/// (<see cref="DockerConfigCredentials.NormalizeRegistry"/>); helper names are the part after "docker-credential-".
/// </summary>
/// <param name="Auths">Credentials written into the file itself, one per registry that has any.</param>
/// <param name="CredsStore">The helper for every registry without a <paramref name="CredHelpers"/> entry, or null.</param>
/// <param name="CredHelpers">Registry → helper for that registry only.</param>
public sealed record DockerConfig(
    IReadOnlyList<RegistryCredential> Auths,
    string? CredsStore,
    IReadOnlyDictionary<string, string> CredHelpers)
{
    public static readonly DockerConfig Empty = new([], null, new Dictionary<string, string>());

    /// <summary>
    /// Where the credential for <paramref name="registry"/> comes from: <c>credHelpers[registry]</c>, else an
    /// <c>auths</c> entry with a credential in it, else <c>credsStore</c>; neither (both null) means anonymous.
    /// </summary>
    /// <remarks>Docker itself asks <c>credsStore</c> even when <c>auths</c> holds a credential; preferring the file's
    /// credential keeps configs that were written by hand (CI) working on hosts without the desktop's store.</remarks>
    public (RegistryCredential? Inline, string? Helper) Resolve(string registry)
    {
        var key = DockerConfigCredentials.NormalizeRegistry(registry);
        if (CredHelpers.TryGetValue(key, out var helper)) return (null, helper);
        var inline = Auths.LastOrDefault(c => c.Registry.Equals(key, StringComparison.OrdinalIgnoreCase));
        return inline is not null ? (inline, null) : (null, CredsStore);
    }
}
