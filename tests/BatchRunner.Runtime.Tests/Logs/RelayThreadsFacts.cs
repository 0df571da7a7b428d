using BatchRunner.Runtime.Logs;

namespace BatchRunner.Runtime.Tests.Logs;

/// <summary>The log relays' threads: every relay gets a thread of its own while it runs, and ended relays' threads are
/// reused (unit tests with real threads).</summary>
public sealed class RelayThreadsFacts
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(20);

    [Fact]
    public async Task Run_GivesEveryRunningRelayItsOwnThread_AndReusesTheThreadsOfEndedOnes()
    {
        const int relays = 12;
        var release = new ManualResetEventSlim();
        var started = new CountdownEvent(relays);
        var firstThreads = new System.Collections.Concurrent.ConcurrentBag<int>();
        var done = Enumerable.Range(0, relays).Select(_ => new TaskCompletionSource()).ToArray();
        for (var i = 0; i < relays; i++)
        {
            var me = done[i];
            // Each blocks until all have started: only possible with a thread each.
            RelayThreads.Run(() =>
            {
                firstThreads.Add(Environment.CurrentManagedThreadId);
                started.Signal();
                release.Wait();
                me.SetResult();
            });
        }
        Assert.True(started.Wait(Deadline), $"{started.CurrentCount} of {relays} relays never started");
        Assert.Equal(relays, firstThreads.Distinct().Count());
        release.Set();
        await Task.WhenAll(done.Select(d => d.Task)).WaitAsync(Deadline);

        // Later relays run on threads that ended relays left (other tests' relays, run meanwhile, may add theirs).
        var laterThreads = new System.Collections.Concurrent.ConcurrentBag<int>();
        for (var i = 0; i < relays; i++)
        {
            var ran = new TaskCompletionSource();
            RelayThreads.Run(() => { laterThreads.Add(Environment.CurrentManagedThreadId); ran.SetResult(); });
            await ran.Task.WaitAsync(Deadline);
        }
        Assert.NotEmpty(laterThreads.Intersect(firstThreads));
    }
}
