using System.Globalization;
using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Scheduling;

/// <summary>
/// Who runs next when several tenants wait: the tenant furthest below its weighted share of the cluster. This
/// process's <see cref="IFetchPolicy"/>: its workers fetch one job at a time, only when this node has room for a job,
/// and from the Hangfire queues in this order; up to <see cref="ConcurrentTurns"/> fetched jobs may be on their way to
/// their attempt's begin at once.
/// </summary>
/// <remarks>
/// <para>The policy. Each BatchRunner queue has one Hangfire queue per tenant (<see cref="JobQueue.PhysicalQueue"/>).
/// The worker's queues keep their priority (<c>Queues</c>, highest first); within a queue, tenants are taken in the
/// order of their <em>weighted dominant share</em>: the largest fraction of the live nodes' CPUs, memory or GPUs that
/// the tenant's starting and running jobs hold, divided by its <c>weight</c> (Dominant Resource Fairness, as in YARN
/// and Kueue). Lowest first; a tenant at its maxRunning CPUs or memory comes last (its jobs would only wait); ties go
/// by name. Within a tenant, jobs keep their submission order.</para>
/// <para>Because the fetch waits until this node has room and the order is computed at that moment, the capacity a
/// finished job frees goes to the tenant furthest below its share then: with two tenants of equal weight and equal
/// jobs, their jobs start in alternation. A job that does not fit this node now is left to other nodes (skipped here)
/// until a reservation is released here, so a large job at the head of a queue does not keep small ones off a node
/// that has room for them. Backfill is no more than that: a large job of the tenant with the lowest share waits for
/// room while smaller jobs of other tenants may start before it.</para>
/// <para>Concurrent turns, and why the order stays exact. A turn lasts from the fetch until the fetched job's attempt has
/// begun (or it went back): the Hangfire Processing transition, the job's read, admission and the begin take tens of
/// milliseconds, and one turn at a time capped a process at about 21 jobs/s. So up to <see cref="ConcurrentTurns"/> turns
/// run at once, but only one of them <em>fetches</em> at a time (waits for room, computes the order, takes a message):
/// every decision is made one after the other, each knowing the ones before. A job fetched and not yet begun is not yet
/// in the database's running sums, so this process counts it itself (<see cref="Pending"/>, its tenant and request as the
/// fetch read them): the order adds it to its tenant's share (and reads the database's sums without it, so that a begin
/// committing meanwhile is counted once, not twice), and the room check adds it to the node's reservations until it
/// holds one of its own.</para>
/// </remarks>
public sealed class FairShare : IFetchPolicy
{
    /// <summary>Fetched jobs on their way to their attempt's begin at once, per process.</summary>
    public const int ConcurrentTurns = 4;

    private static readonly TimeSpan SkipAtMost = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan RoomWait = TimeSpan.FromSeconds(2);

    /// <summary>How long a fetch order may rest on knowing that there is one tenant without reading the tenants again,
    /// even with no change heard (<see cref="TenantChanges"/>): a bound, should a notification ever go unheard.</summary>
    internal static readonly TimeSpan OnlyTenantFor = TimeSpan.FromSeconds(30);

    private readonly Func<IReadOnlyCollection<Guid>, CancellationToken, Task<IReadOnlyList<TenantRecord>>> _tenants;
    private readonly TenantChanges _changes;
    // The one tenant the last read found, the change mark taken before that read, and when: touched by the fetching turn only.
    private (TenantRecord Tenant, long Mark, DateTime At)? _onlyTenant;
    private readonly Func<CancellationToken, Task<ResourceAmounts>> _cluster;
    private readonly NodeReservations _reservations;
    private readonly WaitingSemaphore _turns = new(ConcurrentTurns);
    private readonly WaitingSemaphore _fetching = new(1);
    private readonly Lock _lock = new();
    private readonly Dictionary<FetchTurn, Pending> _pending = [];
    private readonly Dictionary<long, (long Releases, DateTime At)> _skipped = [];

    public FairShare(TenantStore tenants, LiveNodes nodes, NodeReservations reservations, TenantChanges changes)
        : this((notCounted, ct) => tenants.ListSharesAsync(notCounted, ct), async ct => Cluster(await nodes.GetAsync(ct)), reservations, changes)
    {
    }

    /// <param name="tenants">Every tenant with its quota and the running sums the database holds, without the jobs given.</param>
    /// <param name="cluster">What the live nodes offer in all.</param>
    /// <param name="changes">Tenants made or removed, as heard (null: never known unchanged, so read at every order).</param>
    internal FairShare(Func<IReadOnlyCollection<Guid>, CancellationToken, Task<IReadOnlyList<TenantRecord>>> tenants,
        Func<CancellationToken, Task<ResourceAmounts>> cluster, NodeReservations reservations, TenantChanges? changes = null)
    {
        _tenants = tenants;
        _changes = changes ?? new TenantChanges();
        _cluster = cluster;
        _reservations = reservations;
    }

    /// <summary>A fetched job not yet begun: its tenant and what it asked for (null and zero when the fetch could not read them).</summary>
    public sealed record Pending(Guid? JobId, string? Tenant, ResourceAmounts Amounts);

    /// <summary>The fetched jobs not yet begun, now.</summary>
    public IReadOnlyList<Pending> PendingJobs()
    {
        lock (_lock) return [.. _pending.Values];
    }

    public FetchTurn WaitForTurn(CancellationToken ct)
    {
        _turns.Wait(ct);
        try
        {
            _fetching.Wait(ct);
        }
        catch
        {
            _turns.Release();
            throw;
        }
        FetchTurn? turn = null;
        var fetchReleased = 0;
        void ReleaseFetching()
        {
            if (Interlocked.Exchange(ref fetchReleased, 1) == 0) _fetching.Release();
        }
        turn = new FetchTurn(
            fetched: m =>
            {
                lock (_lock) _pending[turn!] = new Pending(m.JobId, m.Tenant, new ResourceAmounts(m.Cpus, m.MemoryBytes, m.Gpus, m.DiskBytes));
                // The decision is made and counted: the next turn may decide.
                ReleaseFetching();
            },
            release: () =>
            {
                lock (_lock) _pending.Remove(turn!);
                ReleaseFetching();
                _turns.Release();
            },
            skip: id =>
            {
                lock (_lock) _skipped[long.Parse(id, CultureInfo.InvariantCulture)] = (_reservations.Releases, DateTime.UtcNow);
            });
        try
        {
            // Decide who goes next when there is room, against the shares of that moment. Without room for long, fetch
            // anyway now and then: the job fetched says why it waits (its message) and is then skipped here until a release.
            var deadline = DateTime.UtcNow + RoomWait;
            while (!HasRoom() && DateTime.UtcNow < deadline)
            {
                ct.ThrowIfCancellationRequested();
                // On the worker's own thread (Hangfire's fetch): a wait without spinning, which would take the CPU from the
                // jobs whose release it waits for.
                QuietWait.Wait(_reservations.WaitForReleaseAsync(TimeSpan.FromMilliseconds(100), ct));
            }
        }
        catch
        {
            turn.Dispose();
            throw;
        }
        return turn;
    }

    /// <summary>Room for the smallest job beside what is reserved and what fetched jobs not yet reserved will ask for.</summary>
    private bool HasRoom()
    {
        Pending[] pending;
        lock (_lock) pending = [.. _pending.Values];
        return _reservations.HasRoomBeyond(pending.Select(p => (p.JobId, p.Amounts)));
    }

    /// <remarks>With one tenant there is nothing to rank: its queues in priority order, whatever it uses. So once a read
    /// finds one tenant, the orders after it are made without reading the tenants (a round trip per fetch) for as long as
    /// no tenant is made or removed (<see cref="TenantChanges"/>, heard from the database) and at most
    /// <see cref="OnlyTenantFor"/>.</remarks>
    public IReadOnlyList<string> Order(IReadOnlyList<string> queues)
    {
        if (_onlyTenant is { } only && _changes.Unchanged(only.Mark) && DateTime.UtcNow - only.At < OnlyTenantFor)
            return Order(queues, [only.Tenant], ResourceAmounts.Zero);
        var pending = PendingJobs();
        var notCounted = pending.Where(p => p.JobId is not null).Select(p => p.JobId!.Value).ToList();
        var mark = _changes.Mark();
        var all = QuietWait.Wait(_tenants(notCounted, CancellationToken.None));
        _onlyTenant = all.Count == 1 ? (all[0], mark, DateTime.UtcNow) : null;
        if (all.Count == 1) return Order(queues, all, ResourceAmounts.Zero);
        var cluster = QuietWait.Wait(_cluster(CancellationToken.None));
        return Order(queues, WithPending(all, pending), cluster);
    }

    public long[] Skipped()
    {
        var releases = _reservations.Releases;
        lock (_lock)
        {
            foreach (var (id, skip) in _skipped.ToList())
                if (skip.Releases != releases || DateTime.UtcNow - skip.At > SkipAtMost) _skipped.Remove(id);
            return [.. _skipped.Keys];
        }
    }

    /// <summary>What the live nodes offer for fair share: CPUs, memory and GPUs (disk is not a share).</summary>
    public static ResourceAmounts Cluster(IReadOnlyList<LiveNode> live) =>
        live.Aggregate(ResourceAmounts.Zero, (sum, n) => sum + (ResourceAmounts.Of(n.Capacity) with { DiskBytes = 0 }));

    /// <summary>The tenants' usage with the fetched jobs not yet begun added to their tenants'.</summary>
    public static IReadOnlyList<TenantRecord> WithPending(IReadOnlyList<TenantRecord> tenants, IReadOnlyList<Pending> pending)
    {
        if (pending.Count == 0) return tenants;
        return [.. tenants.Select(t =>
        {
            var mine = pending.Where(p => p.Tenant == t.Name).ToList();
            if (mine.Count == 0) return t;
            var u = t.Usage;
            return t with
            {
                Usage = u with
                {
                    RunningJobs = u.RunningJobs + mine.Count, RunningCpus = u.RunningCpus + mine.Sum(p => p.Amounts.Cpus),
                    RunningMemoryBytes = u.RunningMemoryBytes + mine.Sum(p => p.Amounts.MemoryBytes), RunningGpus = u.RunningGpus + mine.Sum(p => p.Amounts.Gpus),
                },
            };
        })];
    }

    /// <summary>The Hangfire queues in fetch order: by queue priority, then tenants by <see cref="WeightedShare"/>.</summary>
    public static IReadOnlyList<string> Order(IReadOnlyList<string> queues, IReadOnlyList<TenantRecord> tenants, ResourceAmounts cluster)
    {
        var ranked = tenants
            .OrderBy(t => AtQuota(t))
            .ThenBy(t => WeightedShare(t, cluster))
            .ThenBy(t => t.Name, StringComparer.Ordinal)
            .ToList();
        return [.. queues.SelectMany(q => ranked.Select(t => JobQueue.PhysicalQueue(q, t.Name))).Distinct()];
    }

    /// <summary>The largest fraction of the cluster's CPUs, memory or GPUs the tenant's starting and running jobs hold, over its weight.</summary>
    public static double WeightedShare(TenantRecord t, ResourceAmounts cluster)
    {
        static double Part(double used, double total) => total > 0 ? used / total : 0;
        var dominant = Math.Max(Part(t.Usage.RunningCpus, cluster.Cpus),
            Math.Max(Part(t.Usage.RunningMemoryBytes, cluster.MemoryBytes), Part(t.Usage.RunningGpus, cluster.Gpus)));
        return dominant / t.Quota.Weight;
    }

    private static bool AtQuota(TenantRecord t) =>
        t.Quota.MaxRunningCpus is { } cpus && t.Usage.RunningCpus >= cpus - ResourceAmounts.CpuTolerance
        || t.Quota.MaxRunningMemoryBytes is { } memory && t.Usage.RunningMemoryBytes >= memory;
}
