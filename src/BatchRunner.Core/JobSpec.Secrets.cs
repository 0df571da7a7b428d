using System.Text.Json.Serialization;

namespace BatchRunner.Core;

public sealed partial record JobSpec
{
    /// <summary>
    /// Environment variables whose values are secrets: injected into the container like <see cref="Env"/>, and
    /// otherwise never shown. Never serialised with the spec (<see cref="JsonIgnoreAttribute"/>): the server keeps
    /// them encrypted in a column of their own, so that no code path that writes or shows the spec (the job
    /// document, the dashboard, a log line) can carry them by mistake.
    /// </summary>
    [JsonIgnore]
    public IReadOnlyDictionary<string, string> SecretEnv { get; init; } = new Dictionary<string, string>();

    /// <summary>The names of <see cref="SecretEnv"/> (not secret: stored and shown).</summary>
    public IReadOnlyList<string> SecretEnvNames { get; init; } = [];

    /// <summary>Where to POST the final job document when the job ends; null: nowhere.</summary>
    public JobNotify? Notify { get; init; }
}

/// <summary>A webhook called once the job has ended.</summary>
public sealed record JobNotify
{
    /// <summary>An absolute http or https URL.</summary>
    public required string Url { get; init; }

    /// <summary>The key of the call's HMAC signature, chosen by the submitter; null: the server's own. A secret like
    /// <see cref="JobSpec.SecretEnv"/>: kept encrypted with it and never serialised with the spec.</summary>
    [JsonIgnore]
    public string? Secret { get; init; }
}
