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

    public static async Task<IReadOnlyList<OutputFile>> ScanAsync(string outputsDir, CancellationToken ct)
    {
        var result = new List<OutputFile>();
        if (!Directory.Exists(outputsDir)) return result;
        var pending = new Stack<string>();
        pending.Push(outputsDir);
        while (pending.Count > 0 && result.Count < MaxFiles)
        {
            var dir = pending.Pop();
            foreach (var entry in new DirectoryInfo(dir).EnumerateFileSystemInfos())
            {
                if (entry.LinkTarget is not null) continue;
                if (entry is DirectoryInfo d) { pending.Push(d.FullName); continue; }
                if (entry is not FileInfo f || !IsRegularFile(f.FullName)) continue;
                var rel = Path.GetRelativePath(outputsDir, f.FullName);
                result.Add(new OutputFile(rel, f.Length, await Sha256Async(f.FullName, ct)));
                if (result.Count >= MaxFiles) break;
            }
        }
        result.Sort((a, b) => string.CompareOrdinal(a.Path, b.Path));
        return result;
    }

    /// <summary>FileInfo reports fifos and devices as files too; only plain files are outputs.</summary>
    internal static bool IsRegularFile(string path) => BatchRunner.Runtime.HostFiles.IsRegularFile(path);

    public static async Task<string> Sha256Async(string path, CancellationToken ct)
    {
        await using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.Asynchronous | FileOptions.SequentialScan);
        var hash = await SHA256.HashDataAsync(fs, ct);
        return Convert.ToHexStringLower(hash);
    }
}
