using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Http;

namespace BatchRunner.Server.Api;

/// <summary>The API's bearer key: configured, or generated once and kept in DATA/api-key (mode 0600).</summary>
public sealed class ApiKey
{
    private readonly byte[] _hash;

    private ApiKey(string key, bool generated)
    {
        Value = key;
        Generated = generated;
        _hash = SHA256.HashData(Encoding.UTF8.GetBytes(key));
    }

    public string Value { get; }
    public bool Generated { get; }

    public static ApiKey Resolve(string? configured, string dataDir)
    {
        if (!string.IsNullOrWhiteSpace(configured)) return new ApiKey(configured.Trim(), false);
        var file = Path.Combine(dataDir, "api-key");
        if (File.Exists(file))
        {
            var stored = File.ReadAllText(file).Trim();
            if (stored.Length > 0) return new ApiKey(stored, false);
        }
        var key = Convert.ToBase64String(RandomNumberGenerator.GetBytes(32)).TrimEnd('=').Replace('+', '-').Replace('/', '_');
        var tmp = file + ".tmp";
        File.WriteAllText(tmp, key + "\n");
        File.SetUnixFileMode(tmp, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        File.Move(tmp, file, overwrite: true);
        return new ApiKey(key, true);
    }

    /// <summary>Constant-time comparison of what the client sent with the key.</summary>
    public bool Matches(string? presented) =>
        presented is not null && CryptographicOperations.FixedTimeEquals(SHA256.HashData(Encoding.UTF8.GetBytes(presented)), _hash);

    public bool IsAuthorized(HttpContext ctx)
    {
        var header = ctx.Request.Headers.Authorization.ToString();
        if (header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase)) return Matches(header[7..].Trim());
        if (header.StartsWith("Basic ", StringComparison.OrdinalIgnoreCase))
        {
            // Basic with any user name and the key as password: what a browser can send to the dashboard.
            try
            {
                var decoded = Encoding.UTF8.GetString(Convert.FromBase64String(header[6..].Trim()));
                var colon = decoded.IndexOf(':');
                return colon >= 0 && Matches(decoded[(colon + 1)..]);
            }
            catch (FormatException) { return false; }
        }
        return false;
    }
}
