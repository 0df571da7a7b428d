namespace BatchRunner.Server.Storage;

/// <summary>
/// "Something a workflow waits for may have happened here": pulsed by <see cref="JobStore"/> after it committed a job's end,
/// a cancel, or a job with dependencies or children, so that this process's workflow sweeper looks at once instead of at
/// its next tick. Only a hint: the sweeper's periodic pass (and every other node's) finds the same work without it.
/// </summary>
public sealed class WorkflowSignal
{
    private readonly SemaphoreSlim _pulses = new(0, 1);

    public void Pulse()
    {
        // At most one pending pulse: many ends while a pass runs need one more pass, not many.
        try { _pulses.Release(); }
        catch (SemaphoreFullException) { }
    }

    /// <summary>Waits for a pulse or <paramref name="timeout"/>, whichever comes first.</summary>
    public Task WaitAsync(TimeSpan timeout, CancellationToken ct) => _pulses.WaitAsync(timeout, ct);
}
