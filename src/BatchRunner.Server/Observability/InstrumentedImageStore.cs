using BatchRunner.Oci;

namespace BatchRunner.Server.Observability;

/// <summary>
/// The executor's <see cref="IImageStore"/>, counting cache hits and misses and the bytes pulled. The image
/// store reports progress only for blobs it has to fetch (their total is known before the first byte),
/// so a pull whose last progress report has a total of 0, or that reports nothing, was served from the
/// cache; any other pull is a miss and its total is the bytes it had to fetch.
/// </summary>
public sealed class InstrumentedImageStore(IImageStore inner) : IImageStore
{
    public async Task<PreparedImage> PullAsync(ImageReference reference, PullPolicy policy, IProgress<PullProgress>? progress, CancellationToken ct)
    {
        var observer = new LastProgress(progress);
        PreparedImage image;
        try
        {
            image = await inner.PullAsync(reference, policy, observer, ct);
        }
        catch (ImagePullException)
        {
            BatchRunnerMetrics.ImagePullFailures.Inc();
            throw;
        }
        var fetched = observer.Last?.BytesTotal ?? 0;
        if (fetched > 0)
        {
            BatchRunnerMetrics.ImageCacheMisses.Inc();
            BatchRunnerMetrics.ImagePullBytes.Inc(fetched);
            ImageCacheSizeCollector.MarkChanged();
        }
        else
        {
            BatchRunnerMetrics.ImageCacheHits.Inc();
        }
        return image;
    }

    private sealed class LastProgress(IProgress<PullProgress>? next) : IProgress<PullProgress>
    {
        private PullProgress? _last;
        public PullProgress? Last => Volatile.Read(ref _last);

        public void Report(PullProgress value)
        {
            Volatile.Write(ref _last, value);
            next?.Report(value);
        }
    }
}
