namespace BatchRunner.Core;

public sealed partial record JobSpec
{
    /// <summary>Node labels a node must carry (all of them) to run this job.</summary>
    public IReadOnlyDictionary<string, string> NodeSelector { get; init; } = new Dictionary<string, string>();

    /// <summary>When a failed attempt is tried again (AWS Batch's evaluateOnExit, simplified).</summary>
    public RetryPolicy Retry { get; init; } = RetryPolicy.Default;
}

/// <summary>
/// A failed attempt is retried while attempts &lt; <see cref="Limit"/> + 1 and the failure matches
/// <see cref="OnExitCodes"/> or <see cref="OnReasons"/>. Infrastructure failures (a transient image
/// pull error, a lost node) are retried by default; a job's own failures only when asked for.
/// </summary>
public sealed record RetryPolicy
{
    /// <summary>Retries after the first attempt (0: none).</summary>
    public int Limit { get; init; }
    public IReadOnlyList<int> OnExitCodes { get; init; } = [];
    public IReadOnlyList<string> OnReasons { get; init; } = [];
    public int BackoffSeconds { get; init; } = 5;

    public const int DefaultInfrastructureRetries = 3;
    public const int MaxLimit = 100;

    public static readonly RetryPolicy Default = new();

    /// <summary>Reasons a user may name in <see cref="OnReasons"/>.</summary>
    public static readonly IReadOnlyList<string> RetryableReasons =
        [FailureReason.OomKilled, FailureReason.TimedOut, FailureReason.ImagePullFailed, FailureReason.NodeLost, FailureReason.ExitCode, FailureReason.StartFailed,
         FailureReason.InputsUnavailable, FailureReason.DiskQuotaExceeded];

    /// <summary>Decides whether attempt number <paramref name="attempt"/> that failed this way gets another try.</summary>
    public bool ShouldRetry(int attempt, string reason, int? exitCode, bool infrastructureFailure)
    {
        var explicitMatch = OnReasons.Contains(reason) || (exitCode is { } code && reason == FailureReason.ExitCode && OnExitCodes.Contains(code));
        if (explicitMatch) return attempt <= Limit;
        // Infrastructure failures are not the job's fault: retried even when the policy names nothing.
        if (infrastructureFailure) return attempt <= Math.Max(Limit, DefaultInfrastructureRetries);
        return false;
    }

    public TimeSpan BackoffFor(int attempt) =>
        TimeSpan.FromSeconds(Math.Min(BackoffSeconds * Math.Pow(2, Math.Max(0, attempt - 1)), 3600));
}
