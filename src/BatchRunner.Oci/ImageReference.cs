using System.Diagnostics.CodeAnalysis;

namespace BatchRunner.Oci;

/// <summary>
/// A parsed image reference, normalised as Docker does: "busybox" → docker.io/library/busybox:latest.
/// When both a tag and a digest are given, both are kept and the digest decides what is pulled.
/// </summary>
/// <remarks>
/// Grammar of distribution/reference: <c>[host[:port]/]path[:tag][@digest]</c>. The first path component is a
/// registry host when it contains '.' or ':', is "localhost", or has uppercase letters (repositories cannot);
/// otherwise the registry is docker.io. Only sha256 digests are accepted, the one algorithm the content store
/// addresses blobs by.
/// </remarks>
public sealed record ImageReference(string Registry, string Repository, string? Tag, string? Digest)
{
    public const string DefaultRegistry = "docker.io";
    public const string DefaultTag = "latest";
    private const int MaxNameLength = 255;
    private const int MaxTagLength = 128;

    /// <summary>registry/repository, without tag or digest: "docker.io/library/python".</summary>
    public string Name => $"{Registry}/{Repository}";

    /// <summary>Tag or digest to ask the registry for: the digest when present.</summary>
    public string ManifestReference => Digest ?? Tag ?? DefaultTag;

    public static ImageReference Parse(string text) =>
        TryParse(text, out var reference, out var error) ? reference : throw new FormatException(error);

    public static bool TryParse(string text, [NotNullWhen(true)] out ImageReference? reference, [NotNullWhen(false)] out string? error)
    {
        reference = null;
        error = Validate(text ?? "", out var registry, out var repository, out var tag, out var digest);
        if (error is not null)
        {
            error = $"invalid image reference \"{text}\": {error}";
            return false;
        }
        reference = new ImageReference(registry!, repository!, tag, digest);
        return true;
    }

    public override string ToString() =>
        $"{Registry}/{Repository}{(Tag is null ? "" : ":" + Tag)}{(Digest is null ? "" : "@" + Digest)}";

    private static string? Validate(string text, out string? registry, out string? repository, out string? tag, out string? digest)
    {
        registry = repository = tag = digest = null;
        if (text.Length == 0) return "reference is empty";
        foreach (var c in text)
            if (char.IsWhiteSpace(c) || char.IsControl(c)) return "reference must not contain whitespace or control characters";

        var name = text;
        var at = name.IndexOf('@');
        if (at >= 0)
        {
            digest = name[(at + 1)..];
            name = name[..at];
            if (ValidateDigest(digest) is { } digestError) return digestError;
        }

        var lastSlash = name.LastIndexOf('/');
        var colon = name.LastIndexOf(':');
        if (colon > lastSlash)
        {
            tag = name[(colon + 1)..];
            name = name[..colon];
            if (ValidateTag(tag) is { } tagError) return tagError;
        }

        if (name.Length == 0) return "repository name is empty";
        if (name.Length > MaxNameLength) return $"repository name must not be longer than {MaxNameLength} characters";
        if (name.StartsWith('/')) return "repository name must not start with '/'";
        if (name.EndsWith('/')) return "repository name must not end with '/'";
        if (digest is null && tag is null && name.Length == 64 && IsLowerHex(name))
            return "a 64-character hexadecimal string is an image ID, not a repository name";

        var firstSlash = name.IndexOf('/');
        string remainder;
        if (firstSlash < 0 || !LooksLikeHost(name[..firstSlash]))
        {
            registry = DefaultRegistry;
            remainder = name;
        }
        else
        {
            registry = name[..firstSlash];
            remainder = name[(firstSlash + 1)..];
            if (ValidateHost(registry) is { } hostError) return hostError;
        }

        if (remainder.Any(char.IsAsciiLetterUpper)) return "repository name must be lowercase";
        foreach (var component in remainder.Split('/'))
            if (ValidatePathComponent(component) is { } componentError) return componentError;

        if (registry == "index.docker.io") registry = DefaultRegistry;
        if (registry == DefaultRegistry && !remainder.Contains('/')) remainder = "library/" + remainder;
        repository = remainder;
        if (tag is null && digest is null) tag = DefaultTag;
        return null;
    }

    private static bool LooksLikeHost(string first) =>
        first.Contains('.') || first.Contains(':') || first == "localhost" || first.Any(char.IsAsciiLetterUpper);

    private static string? ValidateTag(string tag)
    {
        if (tag.Length == 0) return "tag is empty";
        if (tag.Length > MaxTagLength) return $"tag must not be longer than {MaxTagLength} characters";
        if (!IsWordChar(tag[0])) return $"tag \"{tag}\" must start with a letter, digit or '_'";
        foreach (var c in tag)
            if (!IsWordChar(c) && c is not ('.' or '-'))
                return $"tag \"{tag}\" may only contain letters, digits, '_', '.' and '-'";
        return null;
    }

    private static string? ValidateDigest(string digest)
    {
        if (digest.Length == 0) return "digest is empty";
        var colon = digest.IndexOf(':');
        if (colon <= 0) return $"digest \"{digest}\" must have the form sha256:<64 hex characters>";
        var algorithm = digest[..colon];
        var hex = digest[(colon + 1)..];
        if (algorithm != "sha256") return $"digest algorithm \"{algorithm}\" is not supported (only sha256)";
        if (hex.Length != 64 || !IsLowerHex(hex)) return "sha256 digest must be 64 lowercase hexadecimal characters";
        return null;
    }

    private static string? ValidateHost(string host)
    {
        var hostPart = host;
        string? port = null;
        if (host.StartsWith('['))
        {
            var close = host.IndexOf(']');
            if (close < 0) return $"registry host \"{host}\" has an unterminated IPv6 address";
            var address = host[1..close];
            if (address.Length == 0 || !address.All(c => char.IsAsciiHexDigit(c) || c is ':' or '.'))
                return $"registry host \"{host}\" has an invalid IPv6 address";
            var rest = host[(close + 1)..];
            if (rest.Length > 0)
            {
                if (rest[0] != ':') return $"registry host \"{host}\" is invalid";
                port = rest[1..];
            }
        }
        else
        {
            var colon = host.IndexOf(':');
            if (colon >= 0)
            {
                port = host[(colon + 1)..];
                hostPart = host[..colon];
            }
            if (hostPart.Length == 0) return $"registry host \"{host}\" is empty";
            foreach (var label in hostPart.Split('.'))
                if (label.Length == 0 || label[0] == '-' || label[^1] == '-' || !label.All(c => char.IsAsciiLetterOrDigit(c) || c == '-'))
                    return $"registry host \"{host}\" is not a valid host name";
        }
        if (port is not null && (port.Length == 0 || !port.All(char.IsAsciiDigit)))
            return $"registry port in \"{host}\" must be a number";
        return null;
    }

    /// <summary>Lowercase alphanumerics joined by one separator: '.', '_', '__' or a run of '-'.</summary>
    private static string? ValidatePathComponent(string component)
    {
        if (component.Length == 0) return "repository name has an empty path component";
        var message = $"repository path component \"{component}\" must be lowercase letters and digits separated by '.', '_', '__' or '-'";
        if (!IsAlphaNum(component[0]) || !IsAlphaNum(component[^1])) return message;
        var i = 0;
        while (i < component.Length)
        {
            if (IsAlphaNum(component[i])) { i++; continue; }
            var start = i;
            while (i < component.Length && !IsAlphaNum(component[i])) i++;
            var separator = component.AsSpan(start, i - start);
            var ok = separator is "." or "_" or "__" || separator.IndexOfAnyExcept('-') < 0;
            if (!ok) return message;
        }
        return null;
    }

    private static bool IsAlphaNum(char c) => char.IsAsciiDigit(c) || char.IsAsciiLetterLower(c);
    private static bool IsWordChar(char c) => char.IsAsciiLetterOrDigit(c) || c == '_';
    private static bool IsLowerHex(string s) => s.All(c => char.IsAsciiDigit(c) || c is >= 'a' and <= 'f');
}
