namespace BatchRunner.Oci.Registry;

/// <summary>
/// One parsed <c>WWW-Authenticate</c> challenge, e.g.
/// <c>Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull"</c>.
/// </summary>
public sealed record AuthChallenge(string Scheme, IReadOnlyDictionary<string, string> Parameters)
{
    public bool IsBearer => Scheme.Equals("Bearer", StringComparison.OrdinalIgnoreCase);
    public bool IsBasic => Scheme.Equals("Basic", StringComparison.OrdinalIgnoreCase);
    public string? Realm => Parameters.GetValueOrDefault("realm");
    public string? Service => Parameters.GetValueOrDefault("service");
    public string? Scope => Parameters.GetValueOrDefault("scope");

    /// <summary>Parses <c>auth-param</c> pairs; quoted values may hold commas (<c>scope="repository:a:pull,push"</c>).</summary>
    public static AuthChallenge Parse(string scheme, string? parameter)
    {
        var result = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        var s = parameter ?? "";
        var i = 0;
        while (i < s.Length)
        {
            while (i < s.Length && (s[i] == ',' || char.IsWhiteSpace(s[i]))) i++;
            var eq = s.IndexOf('=', i);
            if (eq < 0) break;
            var key = s[i..eq].Trim();
            i = eq + 1;
            string value;
            if (i < s.Length && s[i] == '"')
            {
                var sb = new System.Text.StringBuilder();
                i++;
                while (i < s.Length && s[i] != '"')
                {
                    if (s[i] == '\\' && i + 1 < s.Length) i++;
                    sb.Append(s[i++]);
                }
                i++; // closing quote
                value = sb.ToString();
            }
            else
            {
                var comma = s.IndexOf(',', i);
                var end = comma < 0 ? s.Length : comma;
                value = s[i..end].Trim();
                i = end;
            }
            if (key.Length > 0) result[key] = value;
        }
        return new AuthChallenge(scheme, result);
    }
}
