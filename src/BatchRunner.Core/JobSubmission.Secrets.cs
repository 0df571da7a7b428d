namespace BatchRunner.Core;

public sealed partial record JobSubmission
{
    /// <summary>Secret environment variables: injected like <see cref="Env"/>, never shown back.</summary>
    public Dictionary<string, string>? SecretEnv { get; init; }

    /// <summary>A webhook called when the job ends.</summary>
    public NotifySubmission? Notify { get; init; }
}

public sealed record NotifySubmission
{
    public string? Url { get; init; }
    /// <summary>HMAC key for the signature (optional when the server has one of its own).</summary>
    public string? Secret { get; init; }
}
