using BatchRunner.Runtime;

namespace BatchRunner.Server.Storage;

/// <summary>A rerun cannot have its original's inputs: they are gone from this node's data directory.</summary>
public sealed class InputsGoneException(string message) : Exception(message);

/// <summary>
/// A job's inputs given again to a rerun: staged under DATA/inputs-staging (so the staging sweeper removes what a crash
/// leaves) as hard links to the original's files (inputs are mounted read-only and never written once stored, so the
/// rerun sees the same bytes without a second copy, and keeps them when the original's are removed), then moved into
/// the new job's directory in one rename, like a submission's uploads.
/// </summary>
public static class JobInputs
{
    /// <summary>A staging directory holding every file of <paramref name="files"/> (the original's listed inputs).</summary>
    /// <exception cref="InputsGoneException">A listed file is missing or changed size; nothing is left staged.</exception>
    public static string StageCopy(DataPaths paths, Guid originalId, IReadOnlyList<OutputFile> files)
    {
        var source = paths.Inputs(originalId);
        var staged = Path.Combine(paths.InputsStaging, Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(staged);
        File.SetUnixFileMode(staged, (UnixFileMode)0b111_101_101);
        try
        {
            foreach (var f in files)
            {
                var from = Path.Combine(source, f.Path);
                if (!HostFiles.IsRegularFile(from) || new FileInfo(from).Length != f.Size)
                    throw new InputsGoneException($"input \"{f.Path}\" of job {originalId} is no longer stored on this node" +
                        (Directory.Exists(source) ? "" : " (its inputs were removed, or it was submitted through another API node)"));
                var to = Path.Combine(staged, f.Path);
                Directory.CreateDirectory(Path.GetDirectoryName(to)!);
                HostFiles.LinkOrCopy(from, to);
            }
            return staged;
        }
        catch
        {
            Discard(staged);
            throw;
        }
    }

    /// <summary>Moves <paramref name="staged"/> into place as job <paramref name="jobId"/>'s inputs.</summary>
    public static void Commit(DataPaths paths, string staged, Guid jobId)
    {
        var target = paths.Inputs(jobId);
        Directory.CreateDirectory(Path.GetDirectoryName(target)!);
        Directory.Move(staged, target);
    }

    public static void Discard(string staged)
    {
        try { if (Directory.Exists(staged)) Directory.Delete(staged, recursive: true); }
        catch (IOException) { } // the staging sweeper removes it later
    }
}
