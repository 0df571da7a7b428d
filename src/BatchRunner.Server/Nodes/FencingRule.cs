namespace BatchRunner.Server.Nodes;

/// <summary>
/// When a worker must fence itself: stop its containers because it cannot prove it is alive, before any
/// other node may consider it dead and start its jobs again elsewhere.
/// </summary>
/// <remarks>
/// Other nodes declare a node dead when its heartbeat is older than its lease (three intervals), counted
/// from the later of its last heartbeat and the database's own start (<see cref="NodeStore.AliveCondition"/>),
/// so after a database restart every node has a full lease to heartbeat again. A node fences itself after
/// two silent intervals, counted the same way: from the later of its last heartbeat and the moment its
/// database came back, and never while its database is known to be down and restarting (a database that is
/// down cannot declare anyone dead). Only the embedded cluster, which this process supervises and which
/// listens on a Unix socket that no other machine shares, is ever known so; an external database keeps the
/// plain rule.
/// </remarks>
public static class FencingRule
{
    public static bool ShouldFence(long nowTicks, long lastBeatTicks, long databaseBackSinceTicks, bool databaseRestarting, TimeSpan interval)
    {
        if (databaseRestarting) return false;
        var silentSince = Math.Max(lastBeatTicks, databaseBackSinceTicks);
        return TimeSpan.FromMilliseconds(nowTicks - silentSince) >= interval * 2;
    }
}
