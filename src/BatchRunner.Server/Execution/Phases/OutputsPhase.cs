using BatchRunner.Runtime.Disk;
using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Execution.Phases;

/// <summary>
/// Once the container has exited (its processes are gone; it is deleted later, at the release): reads the verdict on the job's disk (its peak usage, whether it went over its limit),
/// then moves what the job left in /outputs from its disk to the job's directory (<see cref="OutputsTransfer"/>: regular
/// files and directories only, setuid and setgid bits removed, devices, FIFOs, sockets and symlinks left out and named
/// in the job's message; the disk's blocks handed back to the host as they are copied), and lists them with their
/// SHA-256 (<see cref="OutputScanner"/>). The job's directory outlives the attempt: this phase acquires nothing.
/// </summary>
/// <remarks>
/// A job's outputs are those of its last attempt: an earlier attempt's on this node are replaced. A failure to
/// move them (the host's disk full) does not change how the job ended; the message says what was lost.
/// </remarks>
public sealed partial class OutputsPhase(DataPaths paths, ILogger<OutputsPhase> log) : IAttemptPhase
{
    public async Task<AttemptResult?> RunAsync(AttemptContext attempt)
    {
        if (attempt.DiskWatch is { } watch) attempt.DiskUsage = await watch.StopAsync();
        var target = paths.Outputs(attempt.JobId);
        if (Directory.Exists(target)) Directory.Delete(target, recursive: true);
        try
        {
            var release = attempt.Disk is { } disk ? disk.ReleaseFreedSpace : (Action?)null;
            var report = await Task.Run(() => OutputsTransfer.Move(attempt.OutputsDir, target, release));
            attempt.OutputsNote = report.Describe();
            LogMoved(log, attempt.JobId, report.Files, report.Bytes);
        }
        catch (IOException e)
        {
            attempt.OutputsNote = $"outputs: not all kept: {e.Message}";
            LogMoveFailed(log, e, attempt.JobId);
        }
        attempt.Outputs = await OutputScanner.ScanAsync(target, CancellationToken.None);
        return null;
    }

    public ValueTask ReleaseAsync(AttemptContext attempt) => ValueTask.CompletedTask;

    [LoggerMessage(Level = LogLevel.Debug, Message = "Job {JobId}: moved {Files} output files ({Bytes} bytes) off its disk")]
    private static partial void LogMoved(ILogger log, Guid jobId, long files, long bytes);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Job {JobId}: moving its outputs off its disk failed")]
    private static partial void LogMoveFailed(ILogger log, Exception e, Guid jobId);
}
