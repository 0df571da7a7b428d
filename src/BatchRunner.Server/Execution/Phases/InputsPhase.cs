using System.Security.Cryptography;
using BatchRunner.Core;
using BatchRunner.Server.Hosting;
using BatchRunner.Server.Nodes;
using BatchRunner.Server.Storage;
using Microsoft.Extensions.Options;

namespace BatchRunner.Server.Execution.Phases;

/// <summary>
/// Makes the job's inputs present in its directory on this node (<c>DATA/jobs/ID/inputs</c>, mounted read-only at
/// /inputs) before anything else of the attempt happens: the tar its record names is read from this node's
/// <see cref="InputsStore"/> when this node took the submission, else fetched from the node that did
/// (<c>GET /internal/v1/jobs/ID/inputs</c>), checked against the record's digest while it streams, and unpacked
/// with the same rules as an upload (<see cref="InputFiles"/>) into a staging directory that is renamed into place
/// only when the digest matched. A job never starts without its inputs: when they cannot be had (the holder is down,
/// unreachable, no longer has them, or sent other bytes) the attempt fails with <c>inputs_unavailable</c>, which is
/// retried with back-off like other infrastructure failures (3 times by default), so a holder that restarts in
/// time lets the job run.
/// </summary>
/// <remarks>
/// Owns nothing after it returns: the unpacked inputs are the job's files (removed with them), a half-unpacked staging
/// directory goes with <see cref="InputFiles"/>' disposal here, or after a crash with the staging sweeper. An earlier
/// attempt on this node that unpacked them already is reused (the rename made them whole).
/// </remarks>
public sealed partial class InputsPhase(DataPaths paths, IInputsSource source, IOptions<BatchRunnerOptions> options,
    ILogger<InputsPhase> log) : IAttemptPhase
{
    public async Task<AttemptResult?> RunAsync(AttemptContext attempt)
    {
        if (attempt.Job.InputsTar is not { } inputs) return null;
        var target = paths.Inputs(attempt.JobId);
        if (Directory.Exists(target)) return null;

        var ct = attempt.Signals.Preparation;
        // The tar holds at most its own size of file bytes; the entry limit is this node's, as for an upload.
        using var staged = new InputFiles(paths.InputsStaging, inputs.Bytes, options.Value.Isolation.MaxInputEntries);
        using var sha = SHA256.Create();
        string from;
        try
        {
            (var tar, from) = await source.OpenAsync(attempt.JobId, inputs, ct);
            // Hashed as it is read; the archive is read to its end (spooled), so the hash is whole afterwards.
            await using (var hashing = new CryptoStream(tar, sha, CryptoStreamMode.Read, leaveOpen: false))
                await staged.AddArchiveAsync("inputs", $"inputs {inputs.Digest}", hashing, ct);
        }
        catch (InputsUnavailableException e)
        {
            return Unavailable(attempt, e.Message);
        }
        catch (InputRejectedException e)
        {
            return Unavailable(attempt, $"the inputs {inputs.Digest} of job {attempt.JobId} could not be unpacked: {e.Message}");
        }
        catch (IOException e)
        {
            // The transfer broke off, or this node's disk refused the bytes.
            return Unavailable(attempt, $"the inputs of job {attempt.JobId} could not be read from node {inputs.Node}: {e.Message}");
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            return await attempt.Signals.InterruptedAsync();
        }
        var actual = "sha256:" + Convert.ToHexStringLower(sha.Hash!);
        if (actual != inputs.Digest)
            return Unavailable(attempt, $"the inputs of job {attempt.JobId} read from {from} hash to {actual}, not {inputs.Digest} as the job records; they were not used");
        staged.CommitTo(target);
        LogUnpacked(log, attempt.JobId, inputs.Digest, from);
        return null;
    }

    public ValueTask ReleaseAsync(AttemptContext attempt) => ValueTask.CompletedTask;

    private AttemptResult Unavailable(AttemptContext attempt, string message)
    {
        LogUnavailable(log, attempt.JobId, message);
        return new AttemptResult.Failed(FailureReason.InputsUnavailable, message, Infrastructure: true);
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Job {JobId}: inputs {Digest} unpacked from {From}")]
    private static partial void LogUnpacked(ILogger log, Guid jobId, string digest, string from);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Job {JobId}: inputs unavailable: {Message}")]
    private static partial void LogUnavailable(ILogger log, Guid jobId, string message);
}
