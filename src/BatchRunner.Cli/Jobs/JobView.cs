using System.Text.Json;

namespace BatchRunner.Cli;

/// <summary>
/// The fields of a job document (<c>GET /api/v1/jobs/{id}</c>) the CLI acts on. The document itself is kept as the
/// server sent it (<see cref="Json"/>), so <c>--output json</c> prints every field, also ones newer than this CLI.
/// </summary>
internal sealed record JobView(JsonElement Json)
{
    public string Id => Str("id") ?? "";
    public string? Name => Str("name");
    public string Image => Str("image") ?? "";
    public string State => Str("state") ?? "";
    public string? Reason => Str("reason");
    public string? Message => Str("message");
    public string? Node => Str("node");
    public int? ExitCode => Json.TryGetProperty("exitCode", out var e) && e.ValueKind == JsonValueKind.Number ? e.GetInt32() : null;
    public DateTimeOffset? StartedAt => Time("startedAt");
    public DateTimeOffset? FinishedAt => Time("finishedAt");

    /// <summary>An array's parent: its size and children per state (null for other jobs).</summary>
    public (int Size, IReadOnlyDictionary<string, int> Counts)? Array =>
        Json.TryGetProperty("array", out var a) && a.ValueKind == JsonValueKind.Object
            ? (a.GetProperty("size").GetInt32(),
               a.TryGetProperty("counts", out var c) && c.ValueKind == JsonValueKind.Object
                   ? c.EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetInt32())
                   : new Dictionary<string, int>())
            : null;

    public static readonly IReadOnlySet<string> FinalStates = new HashSet<string> { "succeeded", "failed", "cancelled" };
    public bool IsFinal => FinalStates.Contains(State);

    /// <summary>Compressed bytes fetched so far and in all, while the image is being pulled.</summary>
    public (long Done, long Total)? PullProgress =>
        Json.TryGetProperty("pullProgress", out var p) && p.ValueKind == JsonValueKind.Object
            && p.TryGetProperty("bytesDone", out var d) && p.TryGetProperty("bytesTotal", out var t)
            ? (d.GetInt64(), t.GetInt64()) : null;

    public IReadOnlyList<OutputFile> Outputs =>
        Json.TryGetProperty("outputs", out var o) && o.ValueKind == JsonValueKind.Array
            ? o.EnumerateArray().Select(OutputFile.From).ToList() : [];

    private string? Str(string name) =>
        Json.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    private DateTimeOffset? Time(string name) => Str(name) is { } s && DateTimeOffset.TryParse(s, out var t) ? t : null;
}

/// <summary>One file a job left in <c>/outputs</c>, as <c>GET /api/v1/jobs/{id}/outputs</c> lists it.</summary>
internal sealed record OutputFile(string Path, long Size, string Sha256)
{
    public static OutputFile From(JsonElement e) => new(
        e.GetProperty("path").GetString()!, e.GetProperty("size").GetInt64(), e.GetProperty("sha256").GetString()!);
}
