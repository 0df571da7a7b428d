namespace BatchRunner.Oci;

/// <summary>
/// A parsed image reference, normalised as Docker does: "busybox" → docker.io/library/busybox:latest.
/// When both a tag and a digest are given, the digest decides what is pulled.
/// </summary>
public sealed record ImageReference(string Registry, string Repository, string? Tag, string? Digest)
{
    // STUB: to be completed (full grammar, normalisation, precise errors).
    public static bool TryParse(string text, out ImageReference? reference, out string? error)
    {
        reference = null; error = null;
        if (string.IsNullOrWhiteSpace(text)) { error = "image reference is empty"; return false; }
        var s = text.Trim();
        string? digest = null;
        var at = s.IndexOf('@');
        if (at >= 0) { digest = s[(at + 1)..]; s = s[..at]; }
        string? tag = null;
        var slash = s.LastIndexOf('/');
        var colon = s.LastIndexOf(':');
        if (colon > slash) { tag = s[(colon + 1)..]; s = s[..colon]; }
        string registry = "docker.io"; string repo = s;
        var first = s.IndexOf('/');
        if (first > 0)
        {
            var head = s[..first];
            if (head.Contains('.') || head.Contains(':') || head == "localhost") { registry = head; repo = s[(first + 1)..]; }
        }
        if (registry == "docker.io" && !repo.Contains('/')) repo = "library/" + repo;
        if (tag is null && digest is null) tag = "latest";
        reference = new ImageReference(registry, repo, tag, digest);
        return true;
    }

    public static ImageReference Parse(string text) =>
        TryParse(text, out var r, out var e) ? r! : throw new FormatException(e);

    /// <summary>Tag or digest to ask the registry for: the digest when present.</summary>
    public string ManifestReference => Digest ?? Tag ?? "latest";

    public override string ToString() =>
        $"{Registry}/{Repository}{(Tag is null ? "" : ":" + Tag)}{(Digest is null ? "" : "@" + Digest)}";
}
