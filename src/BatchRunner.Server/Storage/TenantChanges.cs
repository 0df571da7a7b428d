namespace BatchRunner.Server.Storage;

/// <summary>
/// Whether the set of tenants may have changed since a moment, as this process hears it: a tenant made or removed
/// anywhere notifies <see cref="Channel"/> (migration 0106, a trigger on batchrunner.tenants), and the fetching worker's
/// LISTEN connection (<see cref="FairShareQueueProvider"/>) reports it here. What a <see cref="Mark"/> promises holds
/// only while that connection listens: taken while it does not, or followed by its loss, a mark is never unchanged, since
/// a notification sent meanwhile may have been missed.
/// </summary>
public sealed class TenantChanges
{
    /// <summary>The channel the trigger notifies.</summary>
    public const string Channel = "batchrunner_tenants";

    private long _version;
    private volatile bool _listening;

    /// <summary>A mark to take before a read of the tenants; -1 while nothing listens.</summary>
    public long Mark() => _listening ? Interlocked.Read(ref _version) : -1;

    /// <summary>No tenant was made or removed since <paramref name="mark"/> was taken, as far as this process can know.</summary>
    public bool Unchanged(long mark) => mark >= 0 && _listening && Interlocked.Read(ref _version) == mark;

    /// <summary>The LISTEN is in place: from now on every change is heard. Marks taken before are stale.</summary>
    internal void Listening()
    {
        Interlocked.Increment(ref _version);
        _listening = true;
    }

    /// <summary>The LISTEN connection is gone: changes may go unheard until it is back.</summary>
    internal void Lost()
    {
        _listening = false;
        Interlocked.Increment(ref _version);
    }

    /// <summary>A notification on <see cref="Channel"/>: a tenant was made or removed.</summary>
    internal void Changed() => Interlocked.Increment(ref _version);
}
