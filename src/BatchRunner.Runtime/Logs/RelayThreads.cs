namespace BatchRunner.Runtime.Logs;

/// <summary>
/// The threads that run log relays (<see cref="LogRelay"/>), kept for the next container once a relay has ended: a relay
/// blocks in poll(2) for its container's whole life, so it needs a thread of its own (not the thread pool's), but starting
/// one per container cost the starting thread a sched_yield loop until the new thread ran (.NET's Thread.Start waits for
/// it): 2.4 % of a worker's CPU samples at 30 trivial jobs/s on 2 cores. A thread idle for <see cref="IdleExit"/> ends.
/// </summary>
internal static class RelayThreads
{
    private static readonly TimeSpan IdleExit = TimeSpan.FromSeconds(60);
    // Monitor.Wait/Pulse: a waiting thread blocks without spinning.
    private static readonly object Gate = new();
    private static readonly Queue<Action> Work = new();
    // Threads inside Monitor.Wait now (each counts itself in and out).
    private static int s_waiting;

    /// <summary>Runs <paramref name="work"/> on a relay thread: a waiting one, or a new one.</summary>
    public static void Run(Action work)
    {
        lock (Gate)
        {
            Work.Enqueue(work);
            if (s_waiting > 0) Monitor.Pulse(Gate);
            // Enough threads are waiting to take everything queued (one woken per item; a woken one that finds the queue
            // empty waits again): no new one.
            if (Work.Count <= s_waiting) return;
        }
        new Thread(Loop) { IsBackground = true, Name = "log relay" }.Start();
    }

    private static void Loop()
    {
        while (true)
        {
            Action work;
            lock (Gate)
            {
                while (Work.Count == 0)
                {
                    s_waiting++;
                    var woken = Monitor.Wait(Gate, IdleExit);
                    s_waiting--;
                    if (!woken && Work.Count == 0) return;
                }
                work = Work.Dequeue();
            }
            work();
        }
    }
}
