namespace BatchRunner.Oci.Layers;

/// <summary>
/// Supplies the two zero blocks that end a tar archive when a layer's tar stops without them (umoci
/// insert writes such layers; GNU tar, Go and Python accept them, .NET's TarReader does not). Only
/// added when the data ends on a 512-byte block boundary, and never hashed: the DiffID stays that of
/// the real bytes, which the image config verifies.
/// </summary>
internal sealed class EndOfArchiveStream(Stream inner) : Stream
{
    private const int Block = 512;
    private long _position;
    private int _tailLeft = -1;

    public override int Read(Span<byte> buffer)
    {
        if (_tailLeft < 0)
        {
            var n = inner.Read(buffer);
            if (n > 0) { _position += n; return n; }
            _tailLeft = _position % Block == 0 ? 2 * Block : 0;
        }
        var k = Math.Min(_tailLeft, buffer.Length);
        buffer[..k].Clear();
        _tailLeft -= k;
        return k;
    }

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));
    public override bool CanRead => true;
    public override bool CanSeek => false;
    public override bool CanWrite => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => _position; set => throw new NotSupportedException(); }
    public override void Flush() { }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
}
