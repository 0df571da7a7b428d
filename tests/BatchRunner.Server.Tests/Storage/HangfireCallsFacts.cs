using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Tests.Storage;

/// <summary>
/// Hangfire's synchronous calls on threads of their own (<see cref="HangfireCalls"/>): never on the thread pool, whose
/// threads they would block; the caller's code after its await back on the pool; errors to the caller; at most
/// <see cref="HangfireCalls.Threads"/> at once; after disposal on the caller's thread.
/// </summary>
public sealed class HangfireCallsFacts
{
    [Fact]
    public async Task ACall_RunsOnAThreadOfItsOwn_NotOnThePool()
    {
        using var calls = new HangfireCalls(2);
        var (pool, name) = await calls.RunAsync(() => (Thread.CurrentThread.IsThreadPoolThread, Thread.CurrentThread.Name));
        Assert.False(pool);
        Assert.StartsWith("Hangfire call ", name);
    }

    [Fact]
    public async Task TheCallersCodeAfterItsAwait_DoesNotRunOnTheCallsThread()
    {
        using var calls = new HangfireCalls(1);
        // Completed from the call's thread: without asynchronous continuations, what follows the await would run there.
        await calls.RunAsync(() => Thread.Sleep(20));
        Assert.DoesNotContain("Hangfire call", Thread.CurrentThread.Name ?? "");
    }

    [Fact]
    public async Task ACallsException_ReachesItsCaller_AndTheThreadGoesOn()
    {
        using var calls = new HangfireCalls(1);
        var e = await Assert.ThrowsAsync<InvalidOperationException>(() => calls.RunAsync<int>(() => throw new InvalidOperationException("no")));
        Assert.Equal("no", e.Message);
        Assert.Equal(42, await calls.RunAsync(() => 42));
    }

    [Fact]
    public async Task AtMostThreadsCallsRunAtOnce_TheOthersWaitTheirTurn()
    {
        using var calls = new HangfireCalls(2);
        int running = 0, most = 0;
        var all = Enumerable.Range(0, 8).Select(i => calls.RunAsync(() =>
        {
            var now = Interlocked.Increment(ref running);
            InterlockedMax(ref most, now);
            Thread.Sleep(30);
            Interlocked.Decrement(ref running);
            return i;
        })).ToList();
        Assert.Equal(Enumerable.Range(0, 8), await Task.WhenAll(all));
        Assert.Equal(2, most);
    }

    [Fact]
    public async Task CallsQueuedBeforeDisposal_Finish_AndLaterOnesRunOnTheCallersThread()
    {
        var calls = new HangfireCalls(1);
        using var release = new ManualResetEventSlim();
        var blocked = calls.RunAsync(() => release.Wait(TimeSpan.FromSeconds(30)));
        var queued = calls.RunAsync(() => Thread.CurrentThread.Name);
        calls.Dispose();
        release.Set();
        Assert.True(await blocked);
        Assert.StartsWith("Hangfire call ", await queued);

        var caller = Environment.CurrentManagedThreadId;
        Assert.Equal(caller, await calls.RunAsync(() => Environment.CurrentManagedThreadId));
    }

    private static void InterlockedMax(ref int target, int value)
    {
        for (var seen = Volatile.Read(ref target); value > seen; seen = Volatile.Read(ref target))
            if (Interlocked.CompareExchange(ref target, value, seen) == seen) return;
    }
}
