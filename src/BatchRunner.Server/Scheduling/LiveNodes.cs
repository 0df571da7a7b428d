using BatchRunner.Core;
using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Scheduling;

/// <summary>What every live node has and has given out now, for saying why a job waits (<see cref="WaitReasons"/>).</summary>
public interface IClusterAllocation
{
    /// <summary>Live nodes with their allocation (the requests of their starting and running jobs), read now.</summary>
    Task<IReadOnlyList<NodeInfo>> ListLiveWithAllocationAsync(CancellationToken ct);
}

/// <summary>
/// The live nodes' records, for submission checks: a job that <see cref="NodeFit"/> says fits no live node is
/// refused at once instead of waiting forever. Cached for two seconds so submission stays cheap under load; an empty
/// list (which refuses every job) is read again at the next submission instead, so that a worker coming up is seen at once.
/// </summary>
public sealed class LiveNodes(NodeStore nodes) : IClusterAllocation
{
    private static readonly TimeSpan CacheFor = TimeSpan.FromSeconds(2);
    private (DateTime At, IReadOnlyList<LiveNode> Nodes)? _cache;

    public async Task<IReadOnlyList<LiveNode>> GetAsync(CancellationToken ct)
    {
        if (_cache is { } c && DateTime.UtcNow - c.At < CacheFor) return c.Nodes;
        var list = await nodes.ListLiveAsync(ct);
        _cache = list.Count > 0 ? (DateTime.UtcNow, list) : null;
        return list;
    }

    /// <summary>Field → message when no live node could ever run <paramref name="spec"/>; empty when one could.</summary>
    public async Task<Dictionary<string, string[]>> WhyNoNodeFitsAsync(JobSpec spec, CancellationToken ct) =>
        NodeFit.WhyNoNodeFits(spec, (await GetAsync(ct)).Select(NodeOffer.Of).ToList());

    public Task<IReadOnlyList<NodeInfo>> ListLiveWithAllocationAsync(CancellationToken ct) => nodes.ListAsync(aliveOnly: true, ct);
}
