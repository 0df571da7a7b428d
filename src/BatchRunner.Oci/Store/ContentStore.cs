using System.Security.Cryptography;
using BatchRunner.Oci.Registry;

namespace BatchRunner.Oci.Store;

/// <summary>Opens a blob's bytes starting at an offset; the returned response says where it really starts.</summary>
public delegate Task<BlobResponse> BlobOpener(long offset, CancellationToken ct);

/// <summary>
/// Digest-addressed blobs under <c>{root}/blobs/sha256/&lt;hex&gt;</c>.
/// </summary>
/// <remarks>
/// A blob path exists only with verified content: downloads go to <c>{root}/blobs/tmp/&lt;hex&gt;.partial</c> (same
/// filesystem) while being hashed, and are renamed into place after the digest matched. A partial left by an
/// interrupted download is resumed with an HTTP Range request. Callers must not download the same digest twice at
/// once (<see cref="ImageStore"/> single-flights per digest).
/// <para>Durability: every blob is flushed to disk before the rename that publishes it (<see cref="Durable"/>), so a
/// crash or power loss never leaves a short blob under its final name. A store written without that guarantee (an
/// older version, a disk that lies about flushes) is still never trusted blindly: small blobs are verified on every
/// read (<see cref="TryReadVerifiedAsync"/>) and a layer blob whenever unpacking it fails
/// (<see cref="IsIntact"/>); a damaged blob is removed so that the next pull fetches it again.</para>
/// </remarks>
public sealed class ContentStore
{
    private const int MaxStreamAttempts = 4;

    public ContentStore(string root)
    {
        Root = root;
        Directory.CreateDirectory(Path.Combine(root, "blobs", "sha256"));
        Directory.CreateDirectory(TempDir);
    }

    public string Root { get; }
    private string TempDir => Path.Combine(Root, "blobs", "tmp");

    /// <summary>Path of a blob (present or not). Throws <see cref="FormatException"/> for anything but sha256:&lt;64 hex&gt;.</summary>
    public string BlobPath(string digest) => Path.Combine(Root, "blobs", "sha256", Digests.Hex(digest));

    public string PartialPath(string digest) => Path.Combine(TempDir, Digests.Hex(digest) + ".partial");

    public bool Contains(string digest) => File.Exists(BlobPath(digest));

    /// <summary>
    /// The blob's bytes if it is present and hashes to its digest; null when it is absent, or damaged (then it is
    /// removed, so that the caller fetches it again). For manifests and configs: hashing them costs microseconds.
    /// </summary>
    public async Task<byte[]?> TryReadVerifiedAsync(string digest, CancellationToken ct)
    {
        byte[] bytes;
        try { bytes = await File.ReadAllBytesAsync(BlobPath(digest), ct); }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException) { return null; }
        if (Digests.Sha256(bytes) == digest) return bytes;
        RemoveDamaged(digest);
        return null;
    }

    /// <summary>
    /// Hashes the stored blob; false (and the blob removed) when its content does not match its digest, e.g. a blob
    /// a crash cut short before this store flushed its writes. True when it is intact or absent.
    /// </summary>
    public bool IsIntact(string digest)
    {
        string actual;
        try
        {
            using var file = File.OpenRead(BlobPath(digest));
            actual = Digests.FromHash(SHA256.HashData(file));
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException) { return true; }
        if (actual == digest) return true;
        RemoveDamaged(digest);
        return false;
    }

    private void RemoveDamaged(string digest)
    {
        File.Delete(BlobPath(digest));
        Durable.FlushDirectory(Path.GetDirectoryName(BlobPath(digest))!);
    }

    public FileStream OpenRead(string digest) =>
        new(BlobPath(digest), FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.Asynchronous | FileOptions.SequentialScan);

    /// <summary>Stores small content already in memory (manifests, configs) after checking its digest.</summary>
    public async Task PutAsync(string digest, ReadOnlyMemory<byte> content, CancellationToken ct)
    {
        var path = BlobPath(digest);
        if (File.Exists(path)) return;
        var actual = Digests.Sha256(content.Span);
        if (actual != digest) throw new InvalidDataException($"content hashes to {actual}, not {digest}");
        var tmp = Path.Combine(TempDir, $"{Digests.Hex(digest)}.{Guid.NewGuid():N}.put");
        await Durable.WriteFileAsync(tmp, path, content, ct);
    }

    /// <summary>
    /// Downloads a blob unless present, hashing as it streams; a dropped stream resumes from the bytes already
    /// written. Returns the blob's size.
    /// </summary>
    /// <param name="image">For error messages.</param>
    /// <param name="onBytes">Called with each chunk's size (including bytes recovered from a partial file).</param>
    /// <param name="onData">Given every byte of the blob once, in order, as it is written (a layer unpacked while it
    /// downloads); bytes a registry sends again after ignoring a Range request are not given twice. Unverified until
    /// this returns: whatever is made from them must not be published before.</param>
    public async Task<long> DownloadAsync(string digest, long? expectedSize, BlobOpener open, string image, Action<long>? onBytes, CancellationToken ct,
        Func<ReadOnlyMemory<byte>, CancellationToken, ValueTask>? onData = null)
    {
        var path = BlobPath(digest);
        if (File.Exists(path)) return new FileInfo(path).Length;

        var partial = PartialPath(digest);
        var resumed = File.Exists(partial) && new FileInfo(partial).Length > 0;
        while (true)
        {
            try
            {
                return await DownloadToPartialAsync(digest, expectedSize, open, image, onBytes, onData, partial, path, ct);
            }
            catch (ImagePullException e) when (!e.Transient)
            {
                // Bad content (too long, wrong digest): never resume from it. A transient failure keeps the partial
                // so the next attempt continues with a Range request.
                File.Delete(partial);
                // A partial an earlier process left may end in bytes that never reached the disk before it died
                // (zeros, or nothing): one fresh download tells that apart from a registry serving bad content.
                // onData has seen the bad bytes: a fresh download cannot take them back.
                if (!resumed || onData is not null) throw;
                resumed = false;
            }
        }
    }

    private static async Task<long> DownloadToPartialAsync(
        string digest, long? expectedSize, BlobOpener open, string image, Action<long>? onBytes,
        Func<ReadOnlyMemory<byte>, CancellationToken, ValueTask>? onData, string partial, string path, CancellationToken ct)
    {
        long given = 0; // bytes handed to onData so far: the blob's first `given` bytes
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        await using (var file = new FileStream(partial, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None, 1 << 16, FileOptions.Asynchronous))
        {
            // Re-hash what an earlier, interrupted download left, then continue after it.
            var buffer = new byte[1 << 16];
            if (file.Length > 0 && (expectedSize is null || file.Length < expectedSize))
            {
                int n;
                while ((n = await file.ReadAsync(buffer, ct)) > 0)
                {
                    hash.AppendData(buffer, 0, n);
                    if (onData is not null) await onData(buffer.AsMemory(0, n), ct);
                    given += n;
                }
                onBytes?.Invoke(file.Length);
            }
            else
            {
                file.SetLength(0);
            }

            for (var attempt = 1; ; attempt++)
            {
                try
                {
                    using var blob = await open(file.Length, ct);
                    if (blob.StartOffset != file.Length)
                    {
                        // The registry ignored Range: start over.
                        if (blob.StartOffset != 0) throw new IOException($"registry resumed at {blob.StartOffset}, not {file.Length}");
                        onBytes?.Invoke(-file.Length);
                        file.SetLength(0);
                        file.Position = 0;
                        hash.GetHashAndReset();
                    }
                    file.Position = file.Length;
                    int n;
                    while ((n = await blob.Content.ReadAsync(buffer, ct)) > 0)
                    {
                        var at = file.Position;
                        await file.WriteAsync(buffer.AsMemory(0, n), ct);
                        if (onData is not null && at + n > given)
                        {
                            var skip = (int)Math.Max(0, given - at);
                            await onData(buffer.AsMemory(skip, n - skip), ct);
                            given = at + n;
                        }
                        hash.AppendData(buffer, 0, n);
                        onBytes?.Invoke(n);
                        if (expectedSize is { } max && file.Length > max)
                            throw new ImagePullException($"blob {digest} of image {image} is larger than its manifest says ({max} bytes)");
                    }
                    break;
                }
                catch (IOException e) when (attempt < MaxStreamAttempts && !ct.IsCancellationRequested)
                {
                    // Connection dropped mid-body: the next attempt asks for the rest (Range from file.Length).
                    _ = e;
                }
                catch (IOException e) when (!ct.IsCancellationRequested)
                {
                    throw new ImagePullException($"image {image}: download of blob {digest} kept failing: {e.Message}", e, transient: true);
                }
            }
            // On disk before the rename below publishes it: see Durable.
            file.Flush(flushToDisk: true);
        }

        var actual = Digests.FromHash(hash.GetHashAndReset());
        if (actual != digest)
        {
            throw new ImagePullException($"digest mismatch for blob {digest} of image {image} (downloaded content hashes to {actual})");
        }
        var size = new FileInfo(partial).Length;
        if (expectedSize is { } expected && size != expected)
        {
            throw new ImagePullException($"size mismatch for blob {digest} of image {image}: {size} bytes, manifest says {expected}");
        }
        Durable.Publish(partial, path);
        return size;
    }

    /// <summary>
    /// Starts a blob whose digest is learnt from its bytes (an imported archive's files): they are written to
    /// <c>blobs/tmp/</c> while hashed, and reach <c>blobs/sha256/</c> only through <see cref="BlobIngest.Commit"/>.
    /// </summary>
    public BlobIngest BeginIngest() => new(this, Path.Combine(TempDir, $"ingest-{Guid.NewGuid():N}"));

    /// <summary>Removes the spool files of imports that a crashed process left (only imports write <c>ingest-*</c>).</summary>
    public void CleanIngests()
    {
        foreach (var f in new DirectoryInfo(TempDir).EnumerateFiles("ingest-*")) f.Delete();
    }

    /// <summary>Removes leftovers of downloads that were interrupted more than <paramref name="olderThan"/> ago.</summary>
    public void CleanTemp(TimeSpan olderThan)
    {
        foreach (var f in new DirectoryInfo(TempDir).EnumerateFiles())
            if (DateTime.UtcNow - f.LastWriteTimeUtc > olderThan) f.Delete();
    }
}
