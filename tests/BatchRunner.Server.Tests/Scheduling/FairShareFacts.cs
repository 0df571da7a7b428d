using BatchRunner.Core;
using BatchRunner.Server.Scheduling;
using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Tests.Scheduling;

/// <summary>
/// FairShare's concurrent fetch turns: several fetched jobs may be on their way to their begin at once, and the order in
/// which tenants get the node's slots stays what one turn at a time gave, because the fetched jobs not yet begun count
/// as their tenants'. The "database" is a table of jobs in memory that honours the not-counted list as the real query does.
/// </summary>
public sealed class FairShareFacts
{
    private static readonly ResourceAmounts Cluster = new(2, 4L << 30, 0);

    /// <summary>Begun jobs (in the database's running sums), by id: tenant and CPUs.</summary>
    private readonly Dictionary<Guid, (string Tenant, double Cpus)> _running = [];
    private readonly List<IReadOnlyCollection<Guid>> _notCountedSeen = [];
    private readonly NodeReservations _node = new("fair-" + Guid.NewGuid().ToString("N")[..6], new NodeCapacity(2, 4L << 30, 0), []);

    private FairShare Policy() => new((notCounted, _) =>
    {
        lock (_running)
        {
            _notCountedSeen.Add(notCounted);
            IReadOnlyList<TenantRecord> list = new[] { "a", "b" }.Select(t =>
            {
                var mine = _running.Where(r => r.Value.Tenant == t && !notCounted.Contains(r.Key)).ToList();
                return new TenantRecord(t, DateTimeOffset.UnixEpoch, TenantQuota.None,
                    new TenantUsage(0, mine.Count, mine.Sum(r => r.Value.Cpus), 0, 0));
            }).ToList();
            return Task.FromResult(list);
        }
    }, _ => Task.FromResult(Cluster), _node);

    private static FetchedMessage Message(Guid id, string tenant, double cpus) =>
        new(Random.Shared.NextInt64(1, long.MaxValue).ToString(System.Globalization.CultureInfo.InvariantCulture), "default--" + tenant, id, tenant, cpus, 16L << 20, 0);

    private static string FirstTenant(FairShare p) => p.Order(["default"])[0]["default--".Length..];

    [Fact]
    public async Task WaitForTurn_GivesASecondTurn_WhileTheFirstJobIsNotYetBegun_ButOnlyOnceTheFirstHasFetched()
    {
        var p = Policy();
        using var first = p.WaitForTurn(CancellationToken.None);
        var second = Task.Run(() => p.WaitForTurn(CancellationToken.None));
        // One turn fetches at a time: the second waits for the first's decision, not for its begin.
        Assert.NotSame(second, await Task.WhenAny(second, Task.Delay(150)));
        first.Fetched(Message(Guid.NewGuid(), "a", 0.5));
        (await second.WaitAsync(TimeSpan.FromSeconds(5))).Dispose();
    }

    [Fact]
    public void Order_GivesTheNextSlotToTheOtherTenant_WhileTheFirstTenantsFetchedJobIsNotYetBegun()
    {
        var p = Policy();
        // Both at zero: ties go by name, so tenant a takes the first slot.
        var t1 = p.WaitForTurn(CancellationToken.None);
        Assert.Equal("a", FirstTenant(p));
        var jobA1 = Guid.NewGuid();
        t1.Fetched(Message(jobA1, "a", 1));

        // a's job is fetched, not begun: it counts as a's, so b takes the second slot.
        var t2 = p.WaitForTurn(CancellationToken.None);
        Assert.Equal("b", FirstTenant(p));
        var jobB1 = Guid.NewGuid();
        t2.Fetched(Message(jobB1, "b", 0.5));

        // a holds 1 CPU, b 0.5 (both still pending): b again.
        var t3 = p.WaitForTurn(CancellationToken.None);
        Assert.Equal("b", FirstTenant(p));
        t3.Dispose(); // went back without fetching: nothing counted

        // a's job begins: the database counts it from now, and the pending entry goes; a counts once, not twice.
        lock (_running) _running[jobA1] = ("a", 1);
        t1.Dispose();
        Assert.Contains(jobB1, _notCountedSeen[^1]);
        var t4 = p.WaitForTurn(CancellationToken.None);
        Assert.Equal("b", FirstTenant(p));
        Assert.Equal([jobB1], _notCountedSeen[^1]);
        t4.Dispose();

        // b's job begins too (0.5 CPU) and b's next (0.5, fetched) gives b 1 CPU: a tie at 1 each, by name a.
        lock (_running) _running[jobB1] = ("b", 0.5);
        t2.Dispose();
        var t5 = p.WaitForTurn(CancellationToken.None);
        Assert.Equal("b", FirstTenant(p));
        t5.Fetched(Message(Guid.NewGuid(), "b", 0.5));
        var t6 = p.WaitForTurn(CancellationToken.None);
        Assert.Equal("a", FirstTenant(p));
        t6.Dispose();
        t5.Dispose();
    }

    [Fact]
    public async Task WaitForTurn_CountsFetchedJobsNotYetReserved_AgainstTheNodesRoom_AndOnceWhenReserved()
    {
        var p = Policy();
        var jobA = Guid.NewGuid();
        var t1 = p.WaitForTurn(CancellationToken.None);
        t1.Fetched(Message(jobA, "a", 2)); // the node's two CPUs, not yet reserved
        Assert.False(_node.HasRoomBeyond(p.PendingJobs().Select(x => (x.JobId, x.Amounts))));
        // Reserved by the executor: counted once (as the reservation), still no room.
        Assert.NotNull(_node.TryReserve(jobA, new ResourceRequest { Cpus = 2, MemoryBytes = 16L << 20, Pids = 64 }));
        Assert.False(_node.HasRoomBeyond(p.PendingJobs().Select(x => (x.JobId, x.Amounts))));
        var waiting = Task.Run(() => p.WaitForTurn(CancellationToken.None));
        // The job begins and ends: its reservation is released, which wakes the waiting turn at once (not after its 2 s wait).
        t1.Dispose();
        _node.Release(jobA);
        // Sooner than the turn's own 2 s wait for room: woken by the release.
        using var next = await waiting.WaitAsync(TimeSpan.FromSeconds(1.5));
        Assert.True(_node.HasRoomBeyond(p.PendingJobs().Select(x => (x.JobId, x.Amounts))));
    }

    [Fact]
    public void WaitForTurn_HoldsAtMostConcurrentTurns()
    {
        var p = Policy();
        var turns = Enumerable.Range(0, FairShare.ConcurrentTurns).Select(_ =>
        {
            var t = p.WaitForTurn(CancellationToken.None);
            t.Fetched(Message(Guid.NewGuid(), "a", 0.1));
            return t;
        }).ToList();
        using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(150));
        Assert.ThrowsAny<OperationCanceledException>(() => p.WaitForTurn(cts.Token));
        turns[0].Dispose();
        using var next = p.WaitForTurn(CancellationToken.None);
        foreach (var t in turns) t.Dispose();
    }

    [Fact]
    public void Order_WithOneTenant_ReadsTheTenantsOnce_UntilATenantIsMadeOrTheListenerIsLost()
    {
        var changes = new TenantChanges();
        string[] names = ["a"];
        var reads = 0;
        var p = new FairShare((_, _) =>
        {
            reads++;
            IReadOnlyList<TenantRecord> list = [.. names.Select(n => new TenantRecord(n, DateTimeOffset.UnixEpoch, TenantQuota.None, new TenantUsage(0, 0, 0, 0, 0)))];
            return Task.FromResult(list);
        }, _ => Task.FromResult(Cluster), _node, changes);

        // Nothing listens yet: nothing is known to stay unchanged, so every order reads.
        Assert.Equal(["high--a", "default--a"], p.Order(["high", "default"]));
        Assert.Equal(["high--a", "default--a"], p.Order(["high", "default"]));
        Assert.Equal(2, reads);

        // Listening: one read, then the same order without reading.
        changes.Listening();
        p.Order(["default"]);
        Assert.Equal(3, reads);
        for (var i = 0; i < 5; i++) Assert.Equal(["high--a", "default--a"], p.Order(["high", "default"]));
        Assert.Equal(3, reads);

        // A tenant is made (the trigger's notification): read again, and with two tenants at every order.
        names = ["a", "b"];
        changes.Changed();
        Assert.Equal(["default--a", "default--b"], p.Order(["default"]));
        Assert.Equal(["default--a", "default--b"], p.Order(["default"]));
        Assert.Equal(5, reads);

        // Back to one; then the listener is lost: a change may go unheard, so read again; and once more after it is back.
        names = ["b"];
        changes.Changed();
        Assert.Equal(["default--b"], p.Order(["default"]));
        Assert.Equal(["default--b"], p.Order(["default"]));
        Assert.Equal(6, reads);
        changes.Lost();
        p.Order(["default"]);
        p.Order(["default"]);
        Assert.Equal(8, reads);
        changes.Listening();
        p.Order(["default"]);
        p.Order(["default"]);
        Assert.Equal(9, reads);
    }

    [Fact]
    public void TenantChanges_AMarkTakenWhileNotListening_OrFollowedByAChangeOrALoss_IsNeverUnchanged()
    {
        var changes = new TenantChanges();
        Assert.False(changes.Unchanged(changes.Mark()));
        changes.Listening();
        var mark = changes.Mark();
        Assert.True(changes.Unchanged(mark));
        changes.Changed();
        Assert.False(changes.Unchanged(mark));
        mark = changes.Mark();
        changes.Lost();
        changes.Listening();
        Assert.False(changes.Unchanged(mark));
    }
}
