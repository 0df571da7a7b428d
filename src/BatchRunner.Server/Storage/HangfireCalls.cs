namespace BatchRunner.Server.Storage;

/// <summary>
/// Runs Hangfire's synchronous client and storage calls (create a message, delete, requeue, change a state, read a
/// state, recurring jobs) on threads of their own, never on the thread pool, for code that awaits them: an HTTP request,
/// a background loop.
/// </summary>
/// <remarks>
/// <para>Why: Hangfire's client is synchronous, and a call blocks its thread for a database round trip. Blocked on the
/// thread pool, such calls starve it under a submit load, and then the pool cannot run what they wait for: Npgsql writes a
/// synchronous batch's statements after the first on the thread pool (at most <c>ProcessorCount / 2</c> at a time), and
/// Hangfire's batched commit (<see cref="HangfireBatchedTransaction"/>) is such a batch. On 2 cores, 8 submitters
/// (2026-11-30) left 40 of the node's transactions open ("idle in transaction") while every thread waited for a write no
/// thread was free to make; the pool's 100 connections were soon all held, the probe of the embedded PostgreSQL timed out,
/// and the API answered 503 to everyone, with PostgreSQL idle.</para>
/// <para>The threads also bound how many of these calls hold a database connection at once (<see cref="Threads"/>); the
/// others wait in line, in memory, rather than for a connection.</para>
/// <para>Once disposed (the host stopping), a call runs on its caller's thread, as it would without this class.</para>
/// <para>An idle thread sleeps on a monitor until a call is queued, without spinning first: a BlockingCollection's wait
/// (SemaphoreSlim) spins and yields before it blocks each time its queue is empty, which was 2.7 % of the server's CPU
/// samples at 36 trivial jobs/s on 2 cores (2026-12-01), as <c>WaitingSemaphore</c> found for the fetch turns.</para>
/// </remarks>
public sealed class HangfireCalls : IDisposable
{
    /// <summary>Two per core, at least 4: a call mostly waits for PostgreSQL, not for a core.</summary>
    public static int DefaultThreads => Math.Max(4, 2 * Environment.ProcessorCount);

    private readonly Queue<Action> _work = new();
    private bool _completed;
    private int _disposed;

    public HangfireCalls() : this(DefaultThreads) { }

    public HangfireCalls(int threads)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(threads, 1);
        Threads = threads;
        for (var i = 0; i < threads; i++) new Thread(Loop) { IsBackground = true, Name = $"Hangfire call {i + 1}" }.Start();
    }

    public int Threads { get; }

    /// <summary>Runs <paramref name="call"/> on one of the threads; the returned task completes on the thread pool.</summary>
    public Task<T> RunAsync<T>(Func<T> call)
    {
        // Continuations asynchronously: the caller's code after its await must not run on (and hold) a call's thread.
        var done = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        void Run()
        {
            try { done.SetResult(call()); }
            catch (Exception e) { done.SetException(e); }
        }
        if (Volatile.Read(ref _disposed) != 0 || !TryAdd(Run)) Run();
        return done.Task;
    }

    /// <inheritdoc cref="RunAsync{T}(Func{T})"/>
    public Task RunAsync(Action call) => RunAsync(() =>
    {
        call();
        return true;
    });

    private bool TryAdd(Action work)
    {
        lock (_work)
        {
            if (_completed) return false; // disposed meanwhile
            _work.Enqueue(work);
            Monitor.Pulse(_work);
            return true;
        }
    }

    private void Loop()
    {
        while (true)
        {
            Action work;
            lock (_work)
            {
                while (_work.Count == 0)
                {
                    if (_completed) return;
                    Monitor.Wait(_work);
                }
                work = _work.Dequeue();
            }
            work();
        }
    }

    /// <summary>The threads finish what is queued, then end (not waited for: a call may be waiting out a database outage);
    /// later calls run on their callers' threads.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        lock (_work)
        {
            _completed = true;
            Monitor.PulseAll(_work);
        }
    }
}
