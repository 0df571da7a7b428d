using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Execution.Phases;

/// <summary>
/// Lists what the job left in its /outputs directory once the container is gone (regular files only, with their
/// SHA-256: <see cref="OutputScanner"/>). The files themselves belong to the job's directory, which outlives
/// the attempt: this phase acquires nothing.
/// </summary>
public sealed class OutputsPhase(DataPaths paths) : IAttemptPhase
{
    public async Task<AttemptResult?> RunAsync(AttemptContext attempt)
    {
        attempt.Outputs = await OutputScanner.ScanAsync(paths.Outputs(attempt.JobId), CancellationToken.None);
        return null;
    }

    public ValueTask ReleaseAsync(AttemptContext attempt) => ValueTask.CompletedTask;
}
