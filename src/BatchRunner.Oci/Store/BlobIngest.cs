using System.Security.Cryptography;
using BatchRunner.Oci.Registry;

namespace BatchRunner.Oci.Store;

/// <summary>
/// One blob being written to the content store's temp directory, hashed as it is written. The digest is known
/// once <see cref="CompleteAsync"/> has run; <see cref="Commit"/> then renames the file into
/// <c>blobs/sha256/</c>, so a blob path still only ever exists with content that hashes to its name.
/// Disposing an ingest that was not committed deletes its temp file.
/// </summary>
public sealed class BlobIngest : IDisposable
{
    private readonly ContentStore _store;
    private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
    private readonly byte[] _head = new byte[8];
    private FileStream? _file;
    private bool _committed;

    internal BlobIngest(ContentStore store, string tempPath)
    {
        _store = store;
        TempPath = tempPath;
        _file = new FileStream(tempPath, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16, FileOptions.Asynchronous);
    }

    public string TempPath { get; }
    public long Size { get; private set; }
    /// <summary>"sha256:&lt;hex&gt;" of the bytes written; null until <see cref="CompleteAsync"/>.</summary>
    public string? Digest { get; private set; }
    /// <summary>The first bytes written (up to 8), to sniff a compression format without reopening the file.</summary>
    public ReadOnlySpan<byte> Head => _head.AsSpan(0, (int)Math.Min(Size, _head.Length));

    public async ValueTask WriteAsync(ReadOnlyMemory<byte> data, CancellationToken ct)
    {
        var file = _file ?? throw new InvalidOperationException("the ingest is already complete");
        if (Size < _head.Length)
        {
            var take = (int)Math.Min(_head.Length - Size, data.Length);
            data.Span[..take].CopyTo(_head.AsSpan((int)Size));
        }
        _hash.AppendData(data.Span);
        await file.WriteAsync(data, ct);
        Size += data.Length;
    }

    /// <summary>Closes the temp file and fixes <see cref="Digest"/>.</summary>
    public async ValueTask CompleteAsync(CancellationToken ct)
    {
        var file = _file ?? throw new InvalidOperationException("the ingest is already complete");
        await file.FlushAsync(ct);
        // On disk before Commit's rename publishes it (see Durable).
        file.Flush(flushToDisk: true);
        await file.DisposeAsync();
        _file = null;
        Digest = Digests.FromHash(_hash.GetHashAndReset());
    }

    /// <summary>Moves the content to <c>blobs/sha256/</c> (or drops it when the store has it already); returns the blob path.</summary>
    public string Commit()
    {
        if (Digest is null) throw new InvalidOperationException("complete the ingest before committing it");
        if (_committed) return _store.BlobPath(Digest);
        var path = _store.BlobPath(Digest);
        // Same content either way: overwriting a blob a concurrent pull just stored is harmless.
        Durable.Publish(TempPath, path);
        _committed = true;
        return path;
    }

    public void Dispose()
    {
        _file?.Dispose();
        _file = null;
        _hash.Dispose();
        if (!_committed)
        {
            try { File.Delete(TempPath); }
            catch (IOException) { /* the next start's CleanIngests removes it */ }
        }
    }
}
