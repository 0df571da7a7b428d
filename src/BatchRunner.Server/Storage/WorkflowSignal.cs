namespace BatchRunner.Server.Storage;

/// <summary>
/// "A job ended, was cancelled, or was submitted with dependencies or children here": pulsed by <see cref="JobStore"/> after
/// it committed such a change, so that this process's workflow sweeper and webhook sender look at once instead of at their
/// next tick. Only a hint: their periodic passes (and every other node's) find the same work without it.
/// </summary>
/// <remarks>Each consumer <see cref="Subscribe"/>s once and waits on its own subscription, so that one consumer never takes
/// the pulse another was waiting for.</remarks>
public sealed class WorkflowSignal
{
    private readonly object _gate = new();
    private Subscription[] _subscribers = [];

    public void Pulse()
    {
        foreach (var s in Volatile.Read(ref _subscribers)) s.Pulse();
    }

    /// <summary>A consumer's own view of the pulses: each is seen once, and a pulse while it was busy is kept for its next wait.</summary>
    public Subscription Subscribe()
    {
        var s = new Subscription();
        lock (_gate) _subscribers = [.. _subscribers, s];
        return s;
    }

    public sealed class Subscription
    {
        private readonly SemaphoreSlim _pulses = new(0, 1);

        internal void Pulse()
        {
            // At most one pending pulse: many ends while a pass runs need one more pass, not many.
            PendingPulse.Release(_pulses);
        }

        /// <summary>Waits for a pulse or <paramref name="timeout"/>, whichever comes first; true for a pulse.</summary>
        public Task<bool> WaitAsync(TimeSpan timeout, CancellationToken ct) => _pulses.WaitAsync(timeout, ct);
    }
}
