using BatchRunner.Runtime;

namespace BatchRunner.Server.Storage;

/// <summary>A rerun cannot have its original's inputs: their tar is gone, and so are the files to pack it again from.</summary>
public sealed class InputsGoneException(string message) : Exception(message);

/// <summary>The inputs tar a rerun gets (null when its original had no inputs), with what keeps it until the rerun's record
/// names it: <paramref name="Hold"/> (this node's lock on the digest; dispose it once the record is stored or refused),
/// and <paramref name="SharedWith"/>, the original whose tar is reused (the insert checks that its record still names it).</summary>
public sealed record RerunInputs(InputsTar? Tar, IDisposable? Hold, Guid? SharedWith) : IDisposable
{
    public void Dispose() => Hold?.Dispose();
}

/// <summary>
/// A job's inputs given again to a rerun. The original's tar is reused, same digest, same holder: a tar stays on its
/// holder as long as some record names it, and the rerun's record names it from its insert on. When this node is the
/// holder and the tar is no longer here, the original's unpacked inputs (if the job ran here) are packed again,
/// after checking them against the original's listing. A rerun never starts without its inputs: when neither works,
/// <see cref="InputsGoneException"/> says so and nothing is created. A tar held by another node is not looked at
/// here; if that node lost it, the rerun fails at its inputs phase with <c>inputs_unavailable</c>, never without them.
/// </summary>
public static class JobInputs
{
    /// <exception cref="InputsGoneException">The original had inputs and none can be given to the rerun.</exception>
    public static async Task<RerunInputs> ForRerunAsync(JobRecord original, InputsStore store, DataPaths paths, string nodeName, string? nodeUrl,
        CancellationToken ct)
    {
        if (original.InputsTar is null && original.Inputs.Count == 0) return new RerunInputs(null, null, null);
        if (original.InputsTar is { } tar)
        {
            if (tar.Node != nodeName) return new RerunInputs(tar, null, original.Id);
            var hold = await store.HoldAsync(tar.Digest, ct);
            if (store.PathOf(tar.Digest) is not null) return new RerunInputs(tar, hold, original.Id);
            hold.Dispose();
        }
        var dir = paths.Inputs(original.Id);
        foreach (var f in original.Inputs)
        {
            var path = Path.Combine(dir, f.Path);
            if (!HostFiles.IsRegularFile(path) || new FileInfo(path).Length != f.Size)
                throw new InputsGoneException($"the inputs of job {original.Id} are no longer stored" +
                    (original.InputsTar is { } t ? $" (their tar {t.Digest} is gone from node {t.Node})" : "") +
                    $", and input \"{f.Path}\" is not on this node to pack them again");
        }
        if (!Directory.Exists(dir))
            throw new InputsGoneException($"the inputs of job {original.Id} are no longer stored on node {original.InputsTar?.Node}");
        var packed = await store.PackAsync(dir, ct);
        return new RerunInputs(new InputsTar(packed.Digest, packed.Bytes, nodeName, nodeUrl), packed, null);
    }
}
