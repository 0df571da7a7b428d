using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Execution;

/// <summary>
/// Everything that can stop one attempt, and how to tell which one did: its timeout, a cancel request (this node's
/// <see cref="CancelSignal"/> for the job, at once; Hangfire's token, which also fires for a delivery aborted elsewhere),
/// the worker stopping, and the node being fenced. Before the container
/// runs, any of them interrupts the preparation at once (<see cref="Preparation"/>); while it runs, the container
/// phase weighs them (a shutdown first grants the grace period).
/// </summary>
public sealed class StopSignals : IDisposable
{
    private readonly CancellationTokenSource _timeout;
    private readonly CancellationTokenSource _preparation;
    private readonly CancellationTokenSource _cancelRequest;
    private readonly Func<CancellationToken, Task<bool>> _isCancelRequested;

    /// <param name="isCancelRequested">Reads the job's cancel flag: what a fired <see cref="CancelRequest"/> is checked against,
    /// and the backstop for a cancel request whose signals did not fire.</param>
    /// <param name="cancelNotified">The job's <see cref="CancelSignal"/> watch: fires the moment its cancel is requested, on any node.</param>
    public StopSignals(TimeSpan timeout, TimeProvider time, CancellationToken hangfire, CancellationToken stopping, CancellationToken fenced,
        Func<CancellationToken, Task<bool>> isCancelRequested, CancellationToken cancelNotified = default)
    {
        _timeout = new CancellationTokenSource(timeout, time);
        _cancelRequest = CancellationTokenSource.CreateLinkedTokenSource(hangfire, cancelNotified);
        Stopping = stopping;
        Fenced = fenced;
        _isCancelRequested = isCancelRequested;
        _preparation = CancellationTokenSource.CreateLinkedTokenSource(_timeout.Token, _cancelRequest.Token, stopping, fenced);
    }

    public CancellationToken Timeout => _timeout.Token;

    /// <summary>A cancel request may have been made: the cancel notification or Hangfire's token fired (the flag says whether
    /// it was; Hangfire's token also fires for a delivery aborted elsewhere).</summary>
    public CancellationToken CancelRequest => _cancelRequest.Token;
    public CancellationToken Stopping { get; }
    public CancellationToken Fenced { get; }

    /// <summary>Fires when any signal does: what the pull, the mount and the start are given.</summary>
    public CancellationToken Preparation => _preparation.Token;

    /// <summary>Which signal stopped the attempt, in the order of <see cref="StopCause"/>; <see cref="StopCause.None"/> when none did
    /// (Hangfire's token fired with no cancel request behind it).</summary>
    public async Task<StopCause> CauseAsync()
    {
        if (Fenced.IsCancellationRequested) return StopCause.Fenced;
        if (Timeout.IsCancellationRequested) return StopCause.Timeout;
        if (await CancelFlagAsync()) return StopCause.Cancelled;
        if (Stopping.IsCancellationRequested) return StopCause.Shutdown;
        return StopCause.None;
    }

    /// <summary>How long a read of the cancel flag waits out a database outage (a cancel request needs the database too).</summary>
    public static readonly TimeSpan CancelFlagDeadline = TimeSpan.FromSeconds(1);

    /// <summary>
    /// The job's cancel flag, the truth behind <see cref="CancelRequest"/>. While the database is away it reads as "not
    /// requested": an outage must never stop a running container (its result is recorded once the database is
    /// back), and it used to, when the read gave up after 30 s and the exception unwound the attempt.
    /// </summary>
    private async Task<bool> CancelFlagAsync()
    {
        try { return await Durably.RunAsync(_isCancelRequested, deadline: CancelFlagDeadline); }
        catch (Exception e) when (DatabaseErrors.IsOutage(e)) { return false; }
    }

    /// <summary>The result of a phase whose preparation was interrupted.</summary>
    public async Task<AttemptResult> InterruptedAsync() => new AttemptResult.Stopped(await CauseAsync());

    public void Dispose()
    {
        _preparation.Dispose();
        _cancelRequest.Dispose();
        _timeout.Dispose();
    }
}
