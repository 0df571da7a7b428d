using System.Text.Json;

namespace BatchRunner.Core;

/// <summary>
/// A job as a user submits it (the body of <c>POST /api/v1/jobs</c>), before validation. Fields are
/// loosely typed where the API accepts several forms (<c>memory</c>: "64Mi" or 67108864).
/// </summary>
public sealed partial record JobSubmission
{
    public string? Name { get; init; }
    public string? Image { get; init; }
    public List<string>? Command { get; init; }
    public List<string>? Args { get; init; }
    public Dictionary<string, string>? Env { get; init; }
    public string? WorkingDir { get; init; }
    public string? User { get; init; }
    public ResourceSubmission? Resources { get; init; }
    public int? TimeoutSeconds { get; init; }
    public string? Queue { get; init; }
    public Dictionary<string, string>? Labels { get; init; }
    /// <summary>always | ifNotPresent (default) | never.</summary>
    public string? PullPolicy { get; init; }
    /// <summary>Seconds between the stop signal (cancel, timeout) and SIGKILL; null: the node's default.</summary>
    public int? StopGraceSeconds { get; init; }
}

public sealed partial record ResourceSubmission
{
    public double? Cpus { get; init; }
    /// <summary>A quantity string ("64Mi", "2Gi", "512M") or a JSON integer of bytes.</summary>
    public JsonElement? Memory { get; init; }
    public int? Pids { get; init; }
}
