using System.Security.Cryptography;
using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Storage;

/// <summary>
/// Lists what a job left in its /outputs directory. Only regular files are recorded: a symlink a job
/// wrote (say, to /etc/shadow) is never followed, so the API can only ever serve the job's own bytes.
/// </summary>
public static class OutputScanner
{
    public const int MaxFiles = 10_000;

    /// <summary>The regular files under <paramref name="outputsDir"/> (a job's outputs or inputs), sorted by path, at most
    /// <paramref name="maxFiles"/> of them (default <see cref="MaxFiles"/>).</summary>
    public static async Task<IReadOnlyList<OutputFile>> ScanAsync(string outputsDir, CancellationToken ct, int maxFiles = MaxFiles)
    {
        var result = new List<OutputFile>();
        if (!Directory.Exists(outputsDir)) return result;
        var pending = new Stack<string>();
        pending.Push(outputsDir);
        while (pending.Count > 0 && result.Count < maxFiles)
        {
            var dir = pending.Pop();
            foreach (var entry in new DirectoryInfo(dir).EnumerateFileSystemInfos())
            {
                if (entry.LinkTarget is not null) continue;
                if (entry is DirectoryInfo d) { pending.Push(d.FullName); continue; }
                if (entry is not FileInfo f) continue;
                var rel = Path.GetRelativePath(outputsDir, f.FullName);
                // Hashed through the same kernel-confined open that serves it: FileInfo reports FIFOs and devices
                // as files too, and only plain files reached without a link are outputs.
                await using var content = OpenOutput(outputsDir, rel);
                if (content is null) continue;
                result.Add(new OutputFile(rel, content.Length, Convert.ToHexStringLower(await SHA256.HashDataAsync(content, ct))));
                if (result.Count >= maxFiles) break;
            }
        }
        result.Sort((a, b) => string.CompareOrdinal(a.Path, b.Path));
        return result;
    }

    /// <summary>The output <paramref name="relativePath"/> opened for reading beneath <paramref name="outputsDir"/>
    /// (<see cref="BatchRunner.Runtime.HostFiles.OpenRegularFileBeneath"/>); null unless it is a regular file reached
    /// without following any link.</summary>
    public static FileStream? OpenOutput(string outputsDir, string relativePath) =>
        BatchRunner.Runtime.HostFiles.OpenRegularFileBeneath(outputsDir, relativePath);
}
