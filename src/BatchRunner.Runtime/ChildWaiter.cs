using BatchRunner.Native;

namespace BatchRunner.Runtime;

/// <summary>
/// One thread that waits for the exits of all watched children at once, through their pidfds (poll), so that watching a
/// child starts no thread. A dedicated thread per child (<see cref="ChildExit"/>'s fallback) costs its start on the launch's
/// path: .NET's Thread.Start returns only once the new thread runs, 2-3 ms per start on this busy 2-core host, twice per
/// container (the `run --detach` process, then the container's init). The waiter only calls <c>exited</c> when a pidfd
/// turns readable (the process is a zombie, not yet reaped); what that callback does must not block.
/// </summary>
internal static class ChildWaiter
{
    private static readonly object s_gate = new();
    private static readonly Dictionary<int, Action> s_waiting = []; // pidfd → what to do once its process has exited
    private static int s_wakeFd = -1;

    /// <summary>Calls <paramref name="exited"/> on the waiter's thread once child <paramref name="pid"/> has exited. False,
    /// having done nothing, where a pidfd cannot be had (a kernel before 5.3): the caller waits its own way.</summary>
    public static bool TryWatch(int pid, Action exited)
    {
        lock (s_gate)
        {
            if (s_wakeFd == -2 || (s_wakeFd == -1 && !TryStartLocked())) return false;
            var pidfd = Libc.PidfdOpen(pid);
            if (pidfd < 0) return false;
            s_waiting[pidfd] = exited;
        }
        Libc.EventFdSignal(s_wakeFd); // the waiter polls the new pidfd from its next round
        return true;
    }

    private static bool TryStartLocked()
    {
        // One probe: pidfds of this process itself work wherever children's do.
        var probe = Libc.PidfdOpen(Environment.ProcessId);
        var wake = probe >= 0 ? Libc.EventFd() : -1;
        if (probe >= 0) Libc.close(probe);
        if (wake < 0)
        {
            s_wakeFd = -2;
            return false;
        }
        s_wakeFd = wake;
        new Thread(Run) { IsBackground = true, Name = "child exits" }.Start();
        return true;
    }

    private static void Run()
    {
        var fds = new List<Libc.PollFd>();
        while (true)
        {
            fds.Clear();
            lock (s_gate)
            {
                fds.Add(new Libc.PollFd { Fd = s_wakeFd, Events = Libc.POLLIN });
                foreach (var fd in s_waiting.Keys) fds.Add(new Libc.PollFd { Fd = fd, Events = Libc.POLLIN });
            }
            var ready = fds.ToArray();
            if (Libc.Poll(ready, -1) < 0) continue; // EINTR
            if (ready[0].Revents != 0) Libc.EventFdDrain(s_wakeFd);
            for (var i = 1; i < ready.Length; i++)
            {
                if (ready[i].Revents == 0) continue;
                Action exited;
                lock (s_gate)
                {
                    exited = s_waiting[ready[i].Fd];
                    s_waiting.Remove(ready[i].Fd);
                }
                Libc.close(ready[i].Fd);
                // One child's failure must not end the waits of all the others (an exception here would end the process).
                try { exited(); }
                catch (Exception e) when (e is IOException or InvalidOperationException) { }
            }
        }
    }
}
