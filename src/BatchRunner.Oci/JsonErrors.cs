using System.Text.Json;

namespace BatchRunner.Oci;

/// <summary>
/// What a malformed registry or archive document is told to a user: System.Text.Json's own messages name .NET types
/// ("could not be converted to System.Collections.Generic.List`1[...]"), which mean nothing to whoever reads a job's
/// message. This says where and what in document terms.
/// </summary>
internal static class JsonErrors
{
    public static string Describe(JsonException e)
    {
        var m = e.Message;
        var where = string.IsNullOrEmpty(e.Path) || e.Path == "$" ? "" : $" at {e.Path.TrimStart('$', '.')}";
        if (m.Contains("could not be converted", StringComparison.Ordinal) || m.Contains("could not be mapped", StringComparison.Ordinal))
            return $"a value has the wrong type{where}";
        var cut = m.IndexOf(" Path:", StringComparison.Ordinal);
        if (cut < 0) cut = m.IndexOf(" LineNumber:", StringComparison.Ordinal);
        return (cut > 0 ? m[..cut] : m).TrimEnd('.', ' ') + where;
    }
}
