using BatchRunner.Oci;

namespace BatchRunner.Testing.Fakes;

/// <summary>
/// An <see cref="IImageStore"/> that pulls nothing: every pull returns the same image, whose one "layer" is a
/// directory of the test's. <see cref="OnPull"/> replaces that behaviour (fail, hang until cancelled, ...).
/// For unit tests of logic that uses images; the real store is tested against a real registry.
/// </summary>
public sealed class FakeImageStore(string layerDir) : IImageStore
{
    public const string Digest = "sha256:0000000000000000000000000000000000000000000000000000000000000001";
    private int _pulls;
    private readonly TaskCompletionSource _pullStarted = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>The image config every pull returns (default: cmd /bin/true, no user).</summary>
    public ImageConfig Config { get; set; } = new([], null, ["/bin/true"], null, null);

    /// <summary>Replaces the default pull; gets the reference, policy and the caller's token.</summary>
    public Func<ImageReference, PullPolicy, CancellationToken, Task<PreparedImage>>? OnPull { get; set; }

    public int Pulls => Volatile.Read(ref _pulls);

    /// <summary>Completes when the first pull has begun.</summary>
    public Task PullStarted => _pullStarted.Task;

    public async Task<PreparedImage> PullAsync(ImageReference reference, PullPolicy policy, IProgress<PullProgress>? progress, CancellationToken ct)
    {
        Interlocked.Increment(ref _pulls);
        _pullStarted.TrySetResult();
        if (OnPull is { } pull) return await pull(reference, policy, ct);
        ct.ThrowIfCancellationRequested();
        return ImageFor(reference);
    }

    public PreparedImage ImageFor(ImageReference reference) => new(reference, Digest, Config, [layerDir], 0);

    /// <summary>Every pull fails with <paramref name="error"/>.</summary>
    public void FailWith(Exception error) => OnPull = (_, _, _) => Task.FromException<PreparedImage>(error);

    /// <summary>Every pull waits until its token is cancelled (a slow registry).</summary>
    public void HangUntilCancelled() => OnPull = async (_, _, ct) =>
    {
        await Task.Delay(Timeout.Infinite, ct);
        throw new InvalidOperationException("unreachable");
    };
}
