using System.Diagnostics;

namespace BatchRunner.Runtime.Disk;

/// <summary>
/// The one thread that reads every running job's disk (<see cref="DiskUsageWatch"/>): it sleeps until the first watch
/// is due, then reads that one and every other due within half its own interval, so that the watches of jobs running
/// side by side fall into step and share one wake-up a round.
/// </summary>
/// <remarks>
/// Each watch used to run its own loop of timed waits: at 1 GiB a disk is read about 8 times a second, and each reading
/// was a timer firing on the timer thread and a work item on the thread pool, two thread wake-ups in all. With 10 jobs
/// running that was about 160 wake-ups a second, most of the node's CPU beyond idle. Here 10 jobs' readings take one
/// wake-up of one thread a round. A reading comes at most its interval after the one before, never later, so the
/// watch's guarantee is unchanged; sampling a little early is what pays for the shared round. With no watch the thread
/// waits without a timeout, at no cost.
/// </remarks>
internal sealed class DiskUsageSampler
{
    /// <summary>The node's sampler: started with its first watch, for the life of the process.</summary>
    public static readonly DiskUsageSampler Shared = new("disk usage");

    private readonly string _threadName;
    private readonly object _gate = new();
    private readonly List<DiskUsageWatch> _watches = [];
    private readonly List<DiskUsageWatch> _round = [];
    private Thread? _thread;
    // The due time the thread sleeps until (MaxValue: until a watch comes; MinValue: not asleep, it looks again before it
    // sleeps): a watch added is worth waking it for only when it is due before that.
    private long _sleepsUntil = long.MinValue;
    private long _rounds;

    public DiskUsageSampler(string threadName) => _threadName = threadName;

    /// <summary>Rounds of readings so far (for tests: how many wake-ups the readings took).</summary>
    public long Rounds => Interlocked.Read(ref _rounds);

    /// <summary>Starts reading <paramref name="watch"/>, first after <paramref name="interval"/>.</summary>
    public void Add(DiskUsageWatch watch, TimeSpan interval)
    {
        lock (_gate)
        {
            Schedule(watch, Stopwatch.GetTimestamp(), interval);
            _watches.Add(watch);
            if (_thread is null)
            {
                _thread = new Thread(Loop) { IsBackground = true, Name = _threadName };
                _thread.Start();
            }
            // Each job's start adds one: most are due after what the thread already waits for, and need no wake-up.
            if (watch.DueTimestamp < _sleepsUntil) Monitor.Pulse(_gate);
        }
    }

    /// <summary>Stops reading <paramref name="watch"/>: no round taken after this returns includes it.</summary>
    public void Remove(DiskUsageWatch watch)
    {
        lock (_gate) _watches.Remove(watch);
    }

    private static void Schedule(DiskUsageWatch watch, long now, TimeSpan interval)
    {
        var ticks = (long)(interval.TotalSeconds * Stopwatch.Frequency);
        watch.DueTimestamp = now + ticks;
        watch.EarlyTimestamp = now + ticks / 2;
    }

    private void Loop()
    {
        while (true)
        {
            lock (_gate)
            {
                while (true)
                {
                    if (_watches.Count == 0)
                    {
                        _sleepsUntil = long.MaxValue;
                        Monitor.Wait(_gate);
                        _sleepsUntil = long.MinValue;
                        continue;
                    }
                    var now = Stopwatch.GetTimestamp();
                    var first = long.MaxValue;
                    foreach (var w in _watches) first = Math.Min(first, w.DueTimestamp);
                    if (first > now)
                    {
                        // Whole milliseconds, rounded up: a wait that ends before the due time would only wait again.
                        var ms = (int)Math.Min(int.MaxValue, ((first - now) * 1000 + Stopwatch.Frequency - 1) / Stopwatch.Frequency);
                        _sleepsUntil = first;
                        Monitor.Wait(_gate, ms);
                        _sleepsUntil = long.MinValue;
                        continue;
                    }
                    // Every watch due within half its interval joins this round.
                    foreach (var w in _watches)
                        if (w.EarlyTimestamp <= now) _round.Add(w);
                    break;
                }
            }
            Interlocked.Increment(ref _rounds);
            foreach (var w in _round)
            {
                var next = w.SampleNow();
                if (next is { } interval)
                    lock (_gate) Schedule(w, Stopwatch.GetTimestamp(), interval);
                else Remove(w); // unmounted under it, or failed: nothing more to see
            }
            _round.Clear();
        }
    }
}
