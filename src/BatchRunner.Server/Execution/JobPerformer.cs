using System.ComponentModel;
using Hangfire;

namespace BatchRunner.Server.Execution;

/// <summary>
/// The Hangfire job. Its only argument is the BatchRunner job id (the spec lives in batchrunner.jobs),
/// and its display name is the BatchRunner job's name, not a C# signature.
/// </summary>
public sealed class JobPerformer(JobExecutor executor)
{
    // BatchRunner records every outcome itself; Hangfire must not re-run a job that failed by its own
    // fault (a non-zero exit). Shutdown requeues happen through the cancellation path, not retries.
    [AutomaticRetry(Attempts = 0, OnAttemptsExceeded = AttemptsExceededAction.Fail)]
    [JobDisplayName("{1}")]
    [DisplayName("{1}")]
    public Task RunAsync(Guid jobId, string displayName, CancellationToken cancellationToken) =>
        executor.ExecuteAsync(jobId, cancellationToken);
}
