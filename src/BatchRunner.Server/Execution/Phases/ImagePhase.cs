using System.Diagnostics;
using BatchRunner.Core;
using BatchRunner.Oci;
using BatchRunner.Server.Observability;
using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Execution.Phases;

/// <summary>
/// Makes the job's image present (pull, or the cache) and records its digest on the job. Owns nothing after it
/// returns: the image store pins what a pull is writing only during the pull; afterwards the image is kept by
/// the cache's garbage collector while a queued or running job names its digest, or it was used in the last
/// minutes (<see cref="ImageCacheCollector"/>).
/// </summary>
public sealed class ImagePhase(IImageStore images, IAttemptStore store) : IAttemptPhase
{
    public async Task<AttemptResult?> RunAsync(AttemptContext attempt)
    {
        var spec = attempt.Spec;
        var preparation = attempt.Signals.Preparation;
        var watch = Stopwatch.StartNew();
        PreparedImage image;
        try
        {
            if (!ImageReference.TryParse(spec.Image, out var reference, out var refError))
                return new AttemptResult.Failed(FailureReason.ImagePullFailed, refError ?? $"invalid image reference \"{spec.Image}\"", Infrastructure: false);
            var progress = new ThrottledProgress(p => store.SetPullProgressAsync(attempt.JobId, attempt.Attempt, p.BytesDone, p.BytesTotal, CancellationToken.None));
            image = await images.PullAsync(reference!, PolicyOf(spec.PullPolicy), progress, preparation);
            await progress.FlushAsync();
        }
        catch (ImagePullException e)
        {
            return new AttemptResult.Failed(FailureReason.ImagePullFailed, e.Message, e.Transient);
        }
        catch (OperationCanceledException e) when (!preparation.IsCancellationRequested)
        {
            // An HTTP timeout surfaces as a cancellation nobody asked for.
            return new AttemptResult.Failed(FailureReason.ImagePullFailed, $"image {spec.Image}: {e.Message}", Infrastructure: true);
        }
        catch (Exception e) when (e is not OperationCanceledException && !DatabaseErrors.IsOutage(e))
        {
            // A corrupt or unsafe layer, a full disk: the image could not be made present.
            return new AttemptResult.Failed(FailureReason.ImagePullFailed, $"image {spec.Image}: {e.Message}", Infrastructure: e is IOException);
        }
        catch (OperationCanceledException) when (preparation.IsCancellationRequested)
        {
            return await attempt.Signals.InterruptedAsync();
        }
        BatchRunnerMetrics.ImagePullSeconds.Observe(watch.Elapsed.TotalSeconds);
        // Its digest is recorded with the running mark (ContainerPhase), or by the runner when the attempt ends before that.
        attempt.Image = image;
        return null;
    }

    public ValueTask ReleaseAsync(AttemptContext attempt) => ValueTask.CompletedTask;

    private static PullPolicy PolicyOf(string pullPolicy) => pullPolicy switch
    {
        ImagePullPolicy.Always => PullPolicy.Always,
        ImagePullPolicy.Never => PullPolicy.Never,
        _ => PullPolicy.IfNotPresent,
    };

    /// <summary>Pull progress goes to the database at most twice a second, one write at a time.</summary>
    private sealed class ThrottledProgress(Func<PullProgress, Task> write) : IProgress<PullProgress>
    {
        private long _lastTicks;
        private Task _pending = Task.CompletedTask;

        public void Report(PullProgress value)
        {
            var now = Environment.TickCount64;
            if (now - Interlocked.Read(ref _lastTicks) < 500 || !_pending.IsCompleted) return;
            Interlocked.Exchange(ref _lastTicks, now);
            _pending = write(value);
        }

        public async Task FlushAsync()
        {
            try { await _pending; } catch { /* progress is best effort */ }
        }
    }
}
