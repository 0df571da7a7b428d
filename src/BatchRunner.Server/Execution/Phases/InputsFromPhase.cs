using System.Security.Cryptography;
using BatchRunner.Core;
using BatchRunner.Runtime;
using BatchRunner.Server.Nodes;
using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Execution.Phases;

/// <summary>
/// For each <c>inputsFrom</c>, places the producing job's outputs under <c>/inputs/PRODUCER-ID/</c> (an array's under one
/// directory per child index), beside the files given at submission (<see cref="InputsPhase"/>, which runs first). Outputs
/// on this node are copied from beneath the producer's outputs directory without following links; those on another node
/// are fetched from it through <see cref="INodeFiles"/> (node-to-node, signed as every <see cref="NodeClient"/> request).
/// Every file is checked against its recorded size and SHA-256.
/// </summary>
/// <remarks>
/// Owns <c>DATA/jobs/ID/inputs/PRODUCER-ID/</c>: filled in a <c>.PRODUCER-ID.partial</c> directory beside it and renamed
/// into place, so the job only ever sees a whole set; a partial one a crash left is removed by the next attempt. The
/// directories are part of the job's files (removed with them), not released with the attempt.
/// </remarks>
public sealed partial class InputsFromPhase(IAttemptStore store, DataPaths paths, NodeIdentity node, INodeFiles nodeFiles, ILogger<InputsFromPhase> log) : IAttemptPhase
{
    public async Task<AttemptResult?> RunAsync(AttemptContext attempt)
    {
        var job = attempt.Job;
        if (job.Spec.InputsFrom.Count == 0) return null;
        var inputs = paths.Inputs(job.Id);
        Directory.CreateDirectory(inputs);
        foreach (var from in job.Spec.InputsFrom)
        {
            var produced = await Durably.RunAsync(c => store.GetProducedOutputsAsync(from.Job, c));
            var target = Path.Combine(inputs, from.Job.ToString());
            var partial = Path.Combine(inputs, "." + from.Job + ".partial");
            if (Directory.Exists(partial)) Directory.Delete(partial, recursive: true);
            Directory.CreateDirectory(partial);
            try
            {
                foreach (var p in produced)
                {
                    var root = p.ArrayIndex is { } index ? Path.Combine(partial, index.ToString(System.Globalization.CultureInfo.InvariantCulture)) : partial;
                    foreach (var file in p.Outputs)
                    {
                        if (RelativeTo(file.Path, from.Path) is not { } relative) continue;
                        var destination = Path.Combine(root, relative);
                        Directory.CreateDirectory(Path.GetDirectoryName(destination)!);
                        await PlaceAsync(p, file, destination, attempt.Signals.Preparation);
                    }
                }
            }
            catch (NodeFilesUnavailableException e)
            {
                Directory.Delete(partial, recursive: true);
                // The producer's node being away is not the job's fault: retried as an infrastructure failure.
                return new AttemptResult.Failed(FailureReason.StartFailed, $"inputsFrom {from.Job}: {e.Message}", Infrastructure: true);
            }
            catch (InvalidDataException e)
            {
                Directory.Delete(partial, recursive: true);
                return new AttemptResult.Failed(FailureReason.StartFailed, $"inputsFrom {from.Job}: {e.Message}", Infrastructure: true);
            }
            catch (OperationCanceledException) when (attempt.Signals.Preparation.IsCancellationRequested)
            {
                Directory.Delete(partial, recursive: true);
                return await attempt.Signals.InterruptedAsync();
            }
            if (Directory.Exists(target)) Directory.Delete(target, recursive: true);
            Directory.Move(partial, target);
            LogPlaced(log, job.Id, from.Job, produced.Sum(p => p.Outputs.Count));
        }
        return null;
    }

    public ValueTask ReleaseAsync(AttemptContext attempt) => ValueTask.CompletedTask;

    /// <summary>The output's path below <paramref name="root"/> (null: not under it); every output when there is no root.</summary>
    private static string? RelativeTo(string path, string? root) =>
        root is null ? path : path.StartsWith(root + "/", StringComparison.Ordinal) ? path[(root.Length + 1)..] : null;

    private async Task PlaceAsync(ProducedOutputs producer, OutputFile file, string destination, CancellationToken ct)
    {
        // Here: opened beneath the producer's outputs directory without following any link (as the API serves it);
        // elsewhere: fetched from the node that holds it. Either way copied and checked against what was recorded.
        await using var source = producer.Node is null || producer.Node == node.Name
            ? OutputScanner.OpenOutput(paths.Outputs(producer.JobId), file.Path)
              ?? throw new NodeFilesUnavailableException($"output \"{file.Path}\" of job {producer.JobId} is no longer on node {node.Name} as the regular file it was", nodeDown: false)
            : await nodeFiles.OpenOutputAsync(producer.Node, producer.JobId, file.Path, ct);
        await using var target = new FileStream(destination, FileMode.CreateNew, FileAccess.Write);
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new byte[81920];
        long size = 0;
        int n;
        while ((n = await source.ReadAsync(buffer, ct)) > 0)
        {
            hash.AppendData(buffer, 0, n);
            await target.WriteAsync(buffer.AsMemory(0, n), ct);
            size += n;
        }
        var sha = Convert.ToHexStringLower(hash.GetHashAndReset());
        if (size != file.Size || sha != file.Sha256)
            throw new InvalidDataException($"output \"{file.Path}\" of job {producer.JobId} arrived from node {producer.Node ?? node.Name} as {size} bytes, sha256 {sha}; it was recorded as {file.Size} bytes, sha256 {file.Sha256}");
        // As the job sees every input: readable by any user it runs as.
        File.SetUnixFileMode(destination, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Job {JobId}: {Files} output file(s) of job {Producer} placed under /inputs/{Producer}")]
    private static partial void LogPlaced(ILogger log, Guid jobId, Guid producer, int files);
}
