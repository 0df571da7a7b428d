using System.Security.Cryptography;

namespace BatchRunner.Oci.Layers;

/// <summary>
/// Forward-only view of the decompressed layer that hashes and counts every byte as it passes, so the DiffID
/// and the size limit cost no second read. Throws once more than the limit has been produced.
/// </summary>
internal sealed class DigestingReadStream(Stream inner, long limitBytes) : Stream
{
    private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
    private readonly long _limitBytes = limitBytes;
    private readonly byte[] _head = new byte[4];
    private int _headLength;

    public long BytesRead { get; private set; }

    /// <summary>The first bytes of the stream, kept to explain a tar parse failure (a compressed blob declared as plain tar).</summary>
    public ReadOnlySpan<byte> Head => _head.AsSpan(0, _headLength);

    public string DiffId() => "sha256:" + Convert.ToHexStringLower(_hash.GetHashAndReset());

    public override int Read(Span<byte> buffer)
    {
        var n = inner.Read(buffer);
        if (n > 0) Account(buffer[..n]);
        return n;
    }

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override int ReadByte()
    {
        Span<byte> one = stackalloc byte[1];
        return Read(one) == 1 ? one[0] : -1;
    }

    private void Account(ReadOnlySpan<byte> data)
    {
        if (_headLength < _head.Length)
        {
            var take = Math.Min(_head.Length - _headLength, data.Length);
            data[..take].CopyTo(_head.AsSpan(_headLength));
            _headLength += take;
        }
        BytesRead += data.Length;
        if (BytesRead > _limitBytes)
            throw new LayerLimitExceededException(
                $"layer expands to more than {_limitBytes} bytes uncompressed (MaxUncompressedBytes); refusing to unpack it");
        _hash.AppendData(data);
    }

    /// <summary>Reads what is left (end-of-archive blocks and padding), which is part of the DiffID too.</summary>
    public void Drain(byte[] buffer)
    {
        while (Read(buffer) > 0) { }
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) _hash.Dispose();
        base.Dispose(disposing);
    }

    public override bool CanRead => true;
    public override bool CanSeek => false;
    public override bool CanWrite => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => BytesRead; set => throw new NotSupportedException(); }
    public override void Flush() { }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
}
