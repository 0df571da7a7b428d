namespace BatchRunner.Server.Storage.Embedded;

/// <summary>
/// Delays between attempts to bring the embedded cluster back: the first at once (a killed postmaster is
/// replaced in about a second), then growing to <see cref="Max"/> so that a cluster that cannot start (a
/// full disk, a damaged data directory) is retried without spinning. A postmaster that stayed up for
/// <see cref="StableAfter"/> starts the sequence again.
/// </summary>
internal sealed class RestartBackoff
{
    public static readonly TimeSpan StableAfter = TimeSpan.FromSeconds(60);
    public static readonly TimeSpan Max = TimeSpan.FromSeconds(30);

    private static readonly TimeSpan[] Steps =
        [TimeSpan.Zero, TimeSpan.FromMilliseconds(250), TimeSpan.FromMilliseconds(500), TimeSpan.FromSeconds(1),
         TimeSpan.FromSeconds(2), TimeSpan.FromSeconds(5), TimeSpan.FromSeconds(10), Max];

    private int _attempt;

    public TimeSpan Next() => Steps[Math.Min(_attempt++, Steps.Length - 1)];

    /// <summary>Called when a postmaster dies: one that had been up for <see cref="StableAfter"/> starts over at once.</summary>
    public void Died(TimeSpan upFor)
    {
        if (upFor >= StableAfter) _attempt = 0;
    }
}
