using System.Security.Cryptography;
using BatchRunner.Oci.Registry;
using BatchRunner.Oci.Store;

namespace BatchRunner.Oci.Tests;

public sealed class ContentStoreFacts : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("br-content-").FullName;
    private readonly byte[] _blob = RandomNumberGenerator.GetBytes(300_000);

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private string Digest => Digests.Sha256(_blob);

    // Serves _blob from an offset the way a registry honouring Range does.
    private BlobOpener Serve(List<long> offsets, int failAfterBytes = -1) => (offset, _) =>
    {
        offsets.Add(offset);
        var bytes = _blob.AsMemory((int)offset).ToArray();
        if (failAfterBytes >= 0 && offsets.Count == 1) bytes = bytes[..failAfterBytes];
        Stream s = new MemoryStream(bytes);
        if (failAfterBytes >= 0 && offsets.Count == 1) s = new DroppingStream(s);
        var resp = new HttpResponseMessage(offset > 0 ? System.Net.HttpStatusCode.PartialContent : System.Net.HttpStatusCode.OK);
        return Task.FromResult(new BlobResponse(resp, s, offset));
    };

    [Fact]
    public async Task DownloadAsync_StoresVerifiedBlob_WhenContentMatchesDigest()
    {
        var store = new ContentStore(_root);
        var offsets = new List<long>();

        var size = await store.DownloadAsync(Digest, _blob.Length, Serve(offsets), "img", null, CancellationToken.None);

        Assert.Equal(_blob.Length, size);
        Assert.Equal(_blob, await File.ReadAllBytesAsync(store.BlobPath(Digest)));
        Assert.False(File.Exists(store.PartialPath(Digest)));
        Assert.Equal(Path.Combine(_root, "blobs", "sha256", Digest[7..]), store.BlobPath(Digest));
    }

    [Fact]
    public async Task DownloadAsync_ResumesWithRange_WhenConnectionDropsMidBlob()
    {
        var store = new ContentStore(_root);
        var offsets = new List<long>();

        await store.DownloadAsync(Digest, _blob.Length, Serve(offsets, failAfterBytes: 100_000), "img", null, CancellationToken.None);

        Assert.Equal([0L, 100_000L], offsets);
        Assert.Equal(_blob, await File.ReadAllBytesAsync(store.BlobPath(Digest)));
    }

    [Fact]
    public async Task DownloadAsync_ResumesFromPartialFile_WhenEarlierProcessWasInterrupted()
    {
        var store = new ContentStore(_root);
        await File.WriteAllBytesAsync(store.PartialPath(Digest), _blob[..123_456]);
        var offsets = new List<long>();

        await store.DownloadAsync(Digest, _blob.Length, Serve(offsets), "img", null, CancellationToken.None);

        Assert.Equal([123_456L], offsets);
        Assert.Equal(_blob, await File.ReadAllBytesAsync(store.BlobPath(Digest)));
    }

    [Fact]
    public async Task DownloadAsync_StartsOver_WhenPartialLeftByCrashEndsInBytesThatNeverReachedTheDisk()
    {
        var store = new ContentStore(_root);
        // The size reached the disk, the last 4 KiB of data did not: they read back as zeros.
        var partial = _blob[..123_456];
        Array.Clear(partial, partial.Length - 4096, 4096);
        await File.WriteAllBytesAsync(store.PartialPath(Digest), partial);
        var offsets = new List<long>();

        await store.DownloadAsync(Digest, _blob.Length, Serve(offsets), "img", null, CancellationToken.None);

        Assert.Equal([123_456L, 0L], offsets);
        Assert.Equal(_blob, await File.ReadAllBytesAsync(store.BlobPath(Digest)));
        Assert.False(File.Exists(store.PartialPath(Digest)));
    }

    [Fact]
    public async Task TryReadVerifiedAsync_RemovesBlobAndReturnsNull_WhenContentIsCutShort()
    {
        var store = new ContentStore(_root);
        await store.PutAsync(Digest, _blob, CancellationToken.None);
        Assert.Equal(_blob, await store.TryReadVerifiedAsync(Digest, CancellationToken.None));
        await File.WriteAllBytesAsync(store.BlobPath(Digest), _blob[..1000]);

        Assert.Null(await store.TryReadVerifiedAsync(Digest, CancellationToken.None));
        Assert.False(store.Contains(Digest));
        Assert.Null(await store.TryReadVerifiedAsync(Digest, CancellationToken.None));
    }

    [Fact]
    public async Task IsIntact_RemovesBlob_WhenContentDoesNotMatchDigest()
    {
        var store = new ContentStore(_root);
        await store.PutAsync(Digest, _blob, CancellationToken.None);
        Assert.True(store.IsIntact(Digest));
        var damaged = _blob.ToArray();
        damaged[^1] ^= 1;
        await File.WriteAllBytesAsync(store.BlobPath(Digest), damaged);

        Assert.False(store.IsIntact(Digest));
        Assert.False(store.Contains(Digest));
    }

    [Fact]
    public async Task DownloadAsync_DeletesPartialAndThrows_WhenDigestDoesNotMatch()
    {
        var store = new ContentStore(_root);
        var wrong = Digests.Sha256("something else"u8);
        var offsets = new List<long>();

        var e = await Assert.ThrowsAsync<ImagePullException>(() =>
            store.DownloadAsync(wrong, _blob.Length, Serve(offsets), "127.0.0.1:5000/demo/x:1", null, CancellationToken.None));

        Assert.StartsWith($"digest mismatch for blob {wrong} of image 127.0.0.1:5000/demo/x:1", e.Message);
        Assert.False(File.Exists(store.PartialPath(wrong)));
        Assert.False(File.Exists(store.BlobPath(wrong)));
    }

    [Fact]
    public void BlobPath_Throws_WhenDigestIsNotSha256Hex()
    {
        var store = new ContentStore(_root);

        Assert.Throws<FormatException>(() => store.BlobPath("sha256:../../etc/passwd"));
        Assert.Throws<FormatException>(() => store.BlobPath("sha512:" + new string('a', 128)));
    }

    [Fact]
    public async Task PutAsync_Throws_WhenContentDoesNotMatchDigest()
    {
        var store = new ContentStore(_root);

        await Assert.ThrowsAsync<InvalidDataException>(() => store.PutAsync(Digests.Sha256("a"u8), "b"u8.ToArray(), CancellationToken.None));
        Assert.Empty(Directory.EnumerateFiles(Path.Combine(_root, "blobs"), "*", SearchOption.AllDirectories));
    }

    /// <summary>Delivers its bytes, then fails like a dropped connection.</summary>
    private sealed class DroppingStream(Stream inner) : Stream
    {
        public override int Read(byte[] buffer, int offset, int count)
        {
            var n = inner.Read(buffer, offset, count);
            return n > 0 ? n : throw new IOException("connection reset by peer");
        }
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => inner.Position; set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}
