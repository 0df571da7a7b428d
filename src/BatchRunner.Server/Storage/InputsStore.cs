using System.Collections.Concurrent;
using System.Formats.Tar;
using System.Security.Cryptography;

namespace BatchRunner.Server.Storage;

/// <summary>
/// The inputs tars of the jobs this node took at submission, named by their SHA-256 (<c>DATA/inputs/sha256/HEX</c>):
/// the node that runs a job fetches its tar from here (node-to-node), checks the digest the job record names and
/// unpacks it into the job's directory. Identical inputs share one tar.
/// </summary>
/// <remarks>
/// Guarantees: a tar path exists only complete (written under <c>DATA/inputs/tmp</c>, flushed, then renamed), so a
/// crash never leaves a short tar under a digest name. A tar is removed only when no job record names its digest,
/// checked under a lock per digest that submission holds from publishing the tar until its job's record is stored
/// (<see cref="HoldAsync"/>): a removal cannot slip between the two. Only this node writes or removes its tars.
/// </remarks>
public sealed class InputsStore
{
    private readonly ConcurrentDictionary<string, SemaphoreSlim> _locks = new(StringComparer.Ordinal);

    public InputsStore(DataPaths paths)
    {
        Root = paths.InputsStore;
        Directory.CreateDirectory(BlobsDir);
        Directory.CreateDirectory(TempDir);
    }

    public string Root { get; }
    private string BlobsDir => Path.Combine(Root, "sha256");
    private string TempDir => Path.Combine(Root, "tmp");

    /// <summary>The tar of <paramref name="digest"/> ("sha256:HEX") if this node holds it; null otherwise or for a malformed digest.</summary>
    public string? PathOf(string digest) =>
        TryHex(digest, out var hex) && File.Exists(Path.Combine(BlobsDir, hex)) ? Path.Combine(BlobsDir, hex) : null;

    /// <summary>Every tar this node holds, with when it was written.</summary>
    public IEnumerable<(string Digest, DateTime WrittenUtc, long Bytes)> List() =>
        new DirectoryInfo(BlobsDir).EnumerateFiles().Select(f => ("sha256:" + f.Name, f.LastWriteTimeUtc, f.Length));

    /// <summary>
    /// Packs the directory <paramref name="dir"/> (directories, regular files and symbolic links, as
    /// <see cref="InputFiles"/> staged them) into a tar and publishes it under its digest. The returned value holds
    /// the digest's lock: dispose it once the job's record names the digest (or the job was not stored).
    /// </summary>
    public async Task<PackedInputs> PackAsync(string dir, CancellationToken ct)
    {
        var tmp = Path.Combine(TempDir, Guid.NewGuid().ToString("N") + ".tar");
        try
        {
            string digest;
            long bytes;
            await using (var file = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16, FileOptions.Asynchronous))
            {
                using var sha = SHA256.Create();
                await using (var hashing = new CryptoStream(file, sha, CryptoStreamMode.Write, leaveOpen: true))
                {
                    await using (var tar = new TarWriter(hashing, TarEntryFormat.Pax, leaveOpen: true))
                    {
                        // Sorted: the same inputs give the same bytes (and digest) whatever order the directory lists them in.
                        foreach (var path in Directory.EnumerateFileSystemEntries(dir, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
                        {
                            ct.ThrowIfCancellationRequested();
                            await tar.WriteEntryAsync(path, Path.GetRelativePath(dir, path), ct);
                        }
                    }
                    await hashing.FlushFinalBlockAsync(ct);
                }
                file.Flush(flushToDisk: true);
                digest = "sha256:" + Convert.ToHexStringLower(sha.Hash!);
                bytes = file.Length;
            }
            var target = Path.Combine(BlobsDir, digest["sha256:".Length..]);
            var hold = await HoldAsync(digest, ct);
            try
            {
                // Same digest, same bytes: a tar already there stays (its modification time is what the orphan sweep ages).
                if (File.Exists(target)) File.SetLastWriteTimeUtc(target, DateTime.UtcNow);
                else BatchRunner.Oci.Store.Durable.Publish(tmp, target); // flushed above; the rename is flushed too
                return new PackedInputs(digest, bytes, hold);
            }
            catch
            {
                hold.Dispose();
                throw;
            }
        }
        finally
        {
            File.Delete(tmp);
        }
    }

    /// <summary>Holds <paramref name="digest"/>'s lock: its tar is not removed until the returned value is disposed.</summary>
    public async Task<IDisposable> HoldAsync(string digest, CancellationToken ct)
    {
        var gate = _locks.GetOrAdd(digest, _ => new SemaphoreSlim(1, 1));
        await gate.WaitAsync(ct);
        return new Releaser(gate);
    }

    /// <summary>Removes the tar of <paramref name="digest"/> unless <paramref name="inUse"/> says a job record still names it.</summary>
    /// <returns>True when a tar was removed.</returns>
    public async Task<bool> RemoveUnlessInUseAsync(string digest, Func<string, CancellationToken, Task<bool>> inUse, CancellationToken ct)
    {
        if (PathOf(digest) is null) return false;
        using (await HoldAsync(digest, ct))
        {
            if (PathOf(digest) is not { } path || await inUse(digest, ct)) return false;
            File.Delete(path);
            return true;
        }
    }

    /// <summary>A published tar and the hold on its digest (see <see cref="PackAsync"/>).</summary>
    public sealed record PackedInputs(string Digest, long Bytes, IDisposable Hold) : IDisposable
    {
        public void Dispose() => Hold.Dispose();
    }

    private static bool TryHex(string digest, out string hex)
    {
        hex = digest.StartsWith("sha256:", StringComparison.Ordinal) ? digest["sha256:".Length..] : "";
        return hex.Length == 64 && hex.All(c => c is >= '0' and <= '9' or >= 'a' and <= 'f');
    }

    private sealed class Releaser(SemaphoreSlim gate) : IDisposable
    {
        private int _done;
        public void Dispose() { if (Interlocked.Exchange(ref _done, 1) == 0) gate.Release(); }
    }
}
