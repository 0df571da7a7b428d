using System.Collections.Concurrent;
using System.Globalization;
using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Scheduling;

/// <summary>
/// Who runs next when several tenants wait: the tenant furthest below its weighted share of the cluster. This
/// process's <see cref="IFetchPolicy"/>: its workers fetch one job at a time (the turn lasts until that job's attempt
/// has begun or it went back), only when this node has room for a job, and from the Hangfire queues in this order.
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
/// </remarks>
public sealed class FairShare(TenantStore tenants, LiveNodes nodes, NodeReservations reservations) : IFetchPolicy
{
    private static readonly TimeSpan SkipAtMost = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan RoomWait = TimeSpan.FromSeconds(2);
    private readonly SemaphoreSlim _turn = new(1, 1);
    private readonly ConcurrentDictionary<long, (long Releases, DateTime At)> _skipped = new();

    public FetchTurn WaitForTurn(CancellationToken ct)
    {
        _turn.Wait(ct);
        try
        {
            // Decide who goes next when there is room, against the shares of that moment. Without room for long, fetch
            // anyway now and then: the job fetched says why it waits (its message) and is then skipped here until a release.
            var deadline = DateTime.UtcNow + RoomWait;
            while (!reservations.HasRoom && DateTime.UtcNow < deadline)
            {
                ct.ThrowIfCancellationRequested();
                reservations.WaitForReleaseAsync(TimeSpan.FromMilliseconds(500), ct).GetAwaiter().GetResult();
            }
        }
        catch
        {
            _turn.Release();
            throw;
        }
        return new FetchTurn(() => _turn.Release(),
            id => _skipped[long.Parse(id, CultureInfo.InvariantCulture)] = (reservations.Releases, DateTime.UtcNow));
    }

    public IReadOnlyList<string> Order(IReadOnlyList<string> queues)
    {
        var all = tenants.ListAsync(null, CancellationToken.None).GetAwaiter().GetResult();
        var live = nodes.GetAsync(CancellationToken.None).GetAwaiter().GetResult();
        var cluster = live.Aggregate(ResourceAmounts.Zero, (sum, n) => sum + (ResourceAmounts.Of(n.Capacity) with { DiskBytes = 0 }));
        return Order(queues, all, cluster);
    }

    public long[] Skipped()
    {
        var releases = reservations.Releases;
        foreach (var (id, skip) in _skipped)
            if (skip.Releases != releases || DateTime.UtcNow - skip.At > SkipAtMost) _skipped.TryRemove(id, out _);
        return [.. _skipped.Keys];
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
