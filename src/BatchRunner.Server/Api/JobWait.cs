using BatchRunner.Core;
using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Api;

/// <summary>
/// The long poll of <c>GET /api/v1/jobs/{id}?waitSeconds=N[&amp;whileState=S]</c>: the answer comes as soon as the job's
/// state is no longer <c>S</c> (without <c>whileState</c>: as soon as the job has ended), or after N seconds with the job
/// as it is then. A client that waits for a job this way learns of its end within milliseconds, and asks once instead
/// of polling.
/// </summary>
/// <remarks>Woken by <see cref="JobStateSignal"/> (a NOTIFY from whichever node changed the job), and reading the job at
/// least every <see cref="JobStateSignal.SafetyPollInterval"/> besides. The wait ends early, with the job as it is, when
/// the client goes away or the server stops; at most <see cref="MaxWaiting"/> requests of this process wait at once (429
/// beyond, with Retry-After).</remarks>
public static class JobWait
{
    public const double MaxWaitSeconds = 60;

    /// <summary>Requests of one process waiting at once.</summary>
    public const int MaxWaiting = 10_000;

    /// <summary>How long a wait gives the listener to start before reading the job anyway (the database is away: the
    /// safety polls carry the wait then).</summary>
    private static readonly TimeSpan ListenTimeout = TimeSpan.FromSeconds(2);

    private static int _waiting;

    /// <summary>The query's errors, by field, in the API's words; empty when it is valid.</summary>
    public static Dictionary<string, string[]> Check(double? waitSeconds, string? whileState)
    {
        var errors = new Dictionary<string, string[]>();
        if (waitSeconds is { } w && (double.IsNaN(w) || w < 0 || w > MaxWaitSeconds))
            errors["waitSeconds"] = [$"waitSeconds must be between 0 and {MaxWaitSeconds:0} (seconds to wait for the job's state to change)"];
        if (whileState is not null && !JobState.IsKnown(whileState))
            errors["whileState"] = [$"unknown state \"{whileState}\"; one of: {string.Join(", ", JobState.All)}"];
        else if (whileState is not null && waitSeconds is null)
            errors["whileState"] = ["whileState needs waitSeconds (how long to wait while the job is in that state)"];
        return errors;
    }

    /// <summary>Whether a job in <paramref name="state"/> is still what the caller waits out.</summary>
    public static bool StillWaiting(string state, string? whileState) => whileState is null ? !JobState.IsFinal(state) : state == whileState;

    /// <summary>
    /// The job's document once it is no longer waited out, or at the end of <paramref name="wait"/>; null when it is not
    /// (or no longer) a job the caller may see (<paramref name="read"/>: the job's document as the caller may see it, or
    /// null). <c>TooMany</c>: this process already had <see cref="MaxWaiting"/> waiting requests, so this one did not wait.
    /// </summary>
    /// <remarks>While the signal listens already (the usual case when requests wait), the wait is watched before the job is
    /// read, so one read is enough to compare: a change committed after it wakes the waiter. Otherwise the job is read
    /// first, and the listener starts only for a job that is to be waited out; then it is read again once the listen is in
    /// place.</remarks>
    public static async Task<(JobDto? Job, bool TooMany)> WaitAsync(Func<CancellationToken, Task<JobDto?>> read, Guid jobId, TimeSpan wait,
        string? whileState, JobStateSignal signal, TimeProvider time, CancellationToken stopping, CancellationToken ct)
    {
        JobDto? job = null;
        var readBefore = wait <= TimeSpan.Zero || !signal.IsListening || Volatile.Read(ref _waiting) >= MaxWaiting;
        if (readBefore)
        {
            job = await read(ct);
            if (job is null || wait <= TimeSpan.Zero || !StillWaiting(job.State, whileState)) return (job, false);
        }
        if (Interlocked.Increment(ref _waiting) > MaxWaiting)
        {
            Interlocked.Decrement(ref _waiting);
            if (!readBefore) job = await read(ct);
            return job is null || !StillWaiting(job.State, whileState) ? (job, false) : (job, true);
        }
        try
        {
            var start = time.GetTimestamp();
            using var both = CancellationTokenSource.CreateLinkedTokenSource(ct, stopping);
            using var waiter = signal.Watch(jobId);
            // Listening first, then the read that is compared: a change committed after the listen wakes the waiter.
            if (await signal.ListeningAsync(ListenTimeout, both.Token) || !readBefore) job = await read(ct);
            while (job is not null && StillWaiting(job.State, whileState))
            {
                var left = wait - time.GetElapsedTime(start);
                if (left <= TimeSpan.Zero) break;
                try { await waiter.WaitAsync(left < JobStateSignal.SafetyPollInterval ? left : JobStateSignal.SafetyPollInterval, both.Token); }
                catch (OperationCanceledException) when (stopping.IsCancellationRequested && !ct.IsCancellationRequested) { break; }
                job = await read(ct);
            }
            return (job, false);
        }
        catch (OperationCanceledException) when (stopping.IsCancellationRequested && !ct.IsCancellationRequested)
        {
            // The server stops: the job as it is now.
            return (await read(ct), false);
        }
        finally { Interlocked.Decrement(ref _waiting); }
    }
}
