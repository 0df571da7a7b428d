using BatchRunner.Server.Scheduling;

namespace BatchRunner.Server.Tests.Scheduling;

/// <summary>The fetch turns' semaphore: counts, blocking, cancellation (unit tests with real threads).</summary>
public sealed class WaitingSemaphoreFacts
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(10);

    [Fact]
    public async Task Wait_TakesACount_AndBlocksWhenNoneIsLeft_UntilARelease()
    {
        var s = new WaitingSemaphore(2);
        s.Wait(CancellationToken.None);
        s.Wait(CancellationToken.None);

        var third = Task.Factory.StartNew(() => s.Wait(CancellationToken.None), TaskCreationOptions.LongRunning);
        await Task.Delay(200);
        Assert.False(third.IsCompleted);

        s.Release();
        await third.WaitAsync(Deadline);
    }

    [Fact]
    public async Task Wait_Throws_WhenCancelledWhileBlocked_AndTakesNoCount()
    {
        var s = new WaitingSemaphore(1);
        s.Wait(CancellationToken.None);
        using var cts = new CancellationTokenSource();
        var waiting = Task.Factory.StartNew(() => s.Wait(cts.Token), TaskCreationOptions.LongRunning);
        await Task.Delay(100);

        cts.Cancel();

        await Assert.ThrowsAsync<OperationCanceledException>(() => waiting.WaitAsync(Deadline));
        s.Release();
        s.Wait(new CancellationTokenSource(Deadline).Token); // the count released is still there
        Assert.Throws<OperationCanceledException>(() => s.Wait(new CancellationToken(canceled: true)));
    }

    [Fact]
    public async Task ManyThreads_NeverHoldMoreThanTheCount_AndAllGetTheirTurns()
    {
        const int count = 3, threads = 12, rounds = 500;
        var s = new WaitingSemaphore(count);
        int inside = 0, most = 0, turns = 0;
        var all = Enumerable.Range(0, threads).Select(_ => Task.Factory.StartNew(() =>
        {
            for (var i = 0; i < rounds; i++)
            {
                s.Wait(CancellationToken.None);
                var now = Interlocked.Increment(ref inside);
                int seen;
                while (now > (seen = Volatile.Read(ref most)) && Interlocked.CompareExchange(ref most, now, seen) != seen) { }
                Interlocked.Increment(ref turns);
                Interlocked.Decrement(ref inside);
                s.Release();
            }
        }, TaskCreationOptions.LongRunning)).ToArray();

        await Task.WhenAll(all).WaitAsync(TimeSpan.FromSeconds(60));

        Assert.Equal(threads * rounds, turns);
        Assert.InRange(most, 1, count);
    }
}
