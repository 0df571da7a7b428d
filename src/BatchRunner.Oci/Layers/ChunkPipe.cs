using System.Buffers;
using System.Runtime.ExceptionServices;
using System.Threading.Channels;

namespace BatchRunner.Oci.Layers;

/// <summary>
/// A bounded queue of byte chunks from one writer to one reader, read through <see cref="Reader"/> as a blocking
/// stream: the writer (a download, an inflating thread) runs ahead of the reader (the tar writer) by at most
/// <c>capacity</c> chunks, and waits when the reader falls behind.
/// </summary>
/// <remarks>
/// Guarantees: the reader sees the bytes in the order written, then either the end of the stream or, rethrown with
/// its own type, the exception the writer completed with. After <see cref="CloseReader"/> writes are dropped and
/// never block, so a writer whose reader gave up (a corrupt layer) can still finish its own work (storing the blob).
/// Chunks are pooled buffers; the pipe returns them.
/// </remarks>
internal sealed class ChunkPipe
{
    private readonly Channel<(byte[] Buffer, int Count)> _chunks;
    private volatile bool _readerClosed;
    private Exception? _error;

    public ChunkPipe(int capacity)
    {
        _chunks = Channel.CreateBounded<(byte[], int)>(new BoundedChannelOptions(capacity)
        {
            SingleReader = true,
            SingleWriter = true,
            FullMode = BoundedChannelFullMode.Wait,
        });
        Reader = new ReadSide(this);
    }

    /// <summary>The reading end. Blocking: read it on a thread of its own, never on a thread-pool continuation.</summary>
    public Stream Reader { get; }

    /// <summary>Copies <paramref name="data"/> into the pipe, waiting while it is full.</summary>
    public async ValueTask WriteAsync(ReadOnlyMemory<byte> data, CancellationToken ct)
    {
        if (_readerClosed || data.IsEmpty) return;
        var buffer = ArrayPool<byte>.Shared.Rent(data.Length);
        data.CopyTo(buffer);
        await PostAsync(buffer, data.Length, ct);
    }

    /// <summary>Hands a buffer rented from <see cref="ArrayPool{T}.Shared"/> over to the pipe (which returns it).</summary>
    public async ValueTask PostAsync(byte[] rented, int count, CancellationToken ct)
    {
        try
        {
            if (!_readerClosed && _chunks.Writer.TryWrite((rented, count))) return;
            if (!_readerClosed)
            {
                await _chunks.Writer.WriteAsync((rented, count), ct);
                return;
            }
        }
        catch (ChannelClosedException) when (_readerClosed) { }
        ArrayPool<byte>.Shared.Return(rented);
    }

    /// <summary>The writer is done: the reader gets the end of the stream, or <paramref name="error"/> thrown.</summary>
    public void Complete(Exception? error = null)
    {
        if (error is not null) Interlocked.CompareExchange(ref _error, error, null);
        _chunks.Writer.TryComplete();
    }

    /// <summary>The reader is done (finished, or failed): later writes are dropped and queued chunks released.</summary>
    public void CloseReader()
    {
        _readerClosed = true;
        _chunks.Writer.TryComplete();
        while (_chunks.Reader.TryRead(out var chunk)) ArrayPool<byte>.Shared.Return(chunk.Buffer);
        ((ReadSide)Reader).ReleaseCurrent();
    }

    private sealed class ReadSide(ChunkPipe pipe) : ForwardReadStream
    {
        private byte[]? _current;
        private int _offset, _count;

        public override int Read(Span<byte> buffer)
        {
            while (true)
            {
                if (_current is not null && _offset < _count)
                {
                    var n = Math.Min(buffer.Length, _count - _offset);
                    _current.AsSpan(_offset, n).CopyTo(buffer);
                    _offset += n;
                    return n;
                }
                ReleaseCurrent();
                if (pipe._chunks.Reader.TryRead(out var chunk))
                {
                    (_current, _offset, _count) = (chunk.Buffer, 0, chunk.Count);
                    continue;
                }
                if (pipe._readerClosed) return 0;
                if (pipe._chunks.Reader.WaitToReadAsync().AsTask().GetAwaiter().GetResult()) continue;
                if (Volatile.Read(ref pipe._error) is { } error) ExceptionDispatchInfo.Throw(error);
                return 0;
            }
        }

        public void ReleaseCurrent()
        {
            if (_current is not null) ArrayPool<byte>.Shared.Return(_current);
            _current = null;
        }
    }
}
