using System.Buffers;

namespace BatchRunner.Oci.Layers;

/// <summary>
/// Reads <c>source</c> on a thread of its own, up to a few MiB ahead of the consumer: decompressing and hashing
/// the layer (one core) then overlaps with creating and writing its files (the other), instead of taking turns.
/// </summary>
/// <remarks>
/// Disposing stops and joins the thread before it returns, so the caller may dispose <c>source</c> right after; an
/// exception <c>source</c> throws reaches the consumer's next read with its own type (a gzip error stays an
/// <see cref="InvalidDataException"/>, the size limit a <see cref="LayerLimitExceededException"/>).
/// </remarks>
internal sealed class ReadAheadStream : ForwardReadStream
{
    private const int ChunkBytes = 1 << 20;
    private const int ChunksAhead = 8;
    private readonly Stream _source;
    private readonly ChunkPipe _pipe = new(ChunksAhead);
    private readonly CancellationTokenSource _stop = new();
    private readonly Thread _thread;
    private bool _disposed;

    public ReadAheadStream(Stream source)
    {
        _source = source;
        _thread = new Thread(Produce) { IsBackground = true, Name = "layer-read-ahead" };
        _thread.Start();
    }

    private void Produce()
    {
        try
        {
            while (!_stop.IsCancellationRequested)
            {
                var buffer = ArrayPool<byte>.Shared.Rent(ChunkBytes);
                var filled = 0;
                int n;
                // Whole chunks: fewer hand-overs between the threads.
                while (filled < ChunkBytes && (n = _source.Read(buffer, filled, ChunkBytes - filled)) > 0) filled += n;
                if (filled == 0)
                {
                    ArrayPool<byte>.Shared.Return(buffer);
                    break;
                }
                _pipe.PostAsync(buffer, filled, _stop.Token).AsTask().GetAwaiter().GetResult();
                if (filled < ChunkBytes) break;
            }
            _pipe.Complete();
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested)
        {
            _pipe.Complete();
        }
        catch (Exception e)
        {
            _pipe.Complete(e);
        }
    }

    public override int Read(Span<byte> buffer) => _pipe.Reader.Read(buffer);

    protected override void Dispose(bool disposing)
    {
        if (disposing && !_disposed)
        {
            _disposed = true;
            _stop.Cancel();
            _pipe.CloseReader();
            _thread.Join();
            _stop.Dispose();
        }
        base.Dispose(disposing);
    }
}
