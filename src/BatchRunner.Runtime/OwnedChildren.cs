namespace BatchRunner.Runtime;

/// <summary>
/// Children that their owner waits for itself, such as a <see cref="System.Diagnostics.Process"/> it
/// started (the embedded PostgreSQL's postmaster). While claimed, the <see cref="OrphanReaper"/> never
/// reaps one, even as a zombie, so its exit status always reaches its owner: a subreaper's scan can
/// never steal it, whatever the timing.
/// </summary>
public static class OwnedChildren
{
    private static readonly System.Collections.Concurrent.ConcurrentDictionary<int, byte> s_claimed = new();

    /// <summary>Claims <paramref name="pid"/> until the returned handle is disposed (after its owner saw it exit).</summary>
    public static IDisposable Claim(int pid)
    {
        s_claimed[pid] = 0;
        return new Release(pid);
    }

    public static bool IsClaimed(int pid) => s_claimed.ContainsKey(pid);

    private sealed class Release(int pid) : IDisposable
    {
        private int _done;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _done, 1) == 0) s_claimed.TryRemove(pid, out _);
        }
    }
}
