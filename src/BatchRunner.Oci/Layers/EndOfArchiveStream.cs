namespace BatchRunner.Oci.Layers;

/// <summary>
/// Supplies what a tar stream that stops early leaves out: the zero padding of its last block and the
/// two zero blocks that end an archive (umoci insert writes such layers; GNU tar, Go and Python accept
/// them, .NET's TarReader does not). Never hashed: the DiffID stays that of the real bytes, and the
/// blob digest and the config's diff_ids are what vouch for the layer's integrity.
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
            // Less than one header block is no archive at all (a compressed blob declared as plain tar, say):
            // leave it to fail as such rather than padding it into an "empty" archive.
            _tailLeft = _position < Block ? 0 : (int)((Block - _position % Block) % Block) + 2 * Block;
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
