using BatchRunner.Server.Nodes;

namespace BatchRunner.Server.Tests.Embedded;

/// <summary>When a worker stops its own containers because it cannot heartbeat (issue 16: not while its database restarts).</summary>
public sealed class FencingRuleFacts
{
    private static readonly TimeSpan Interval = TimeSpan.FromSeconds(5);
    private const long Now = 1_000_000;

    [Theory]
    // silent since the last beat (ms), the database came back (ms before now; null: never went away), restarting, fence?
    [InlineData(9_999, null, false, false)]   // under two intervals
    [InlineData(10_000, null, false, true)]   // two intervals: an external database's outage fences as before
    [InlineData(60_000, null, true, false)]   // the embedded database is down and restarting: nobody can declare us dead
    [InlineData(60_000, 3_000, false, false)] // it came back 3 s ago: silence counts from then
    [InlineData(60_000, 10_000, false, true)] // back for two intervals and still no heartbeat: fence
    [InlineData(4_000, 60_000, false, false)] // a recent beat wins over an old restart
    public void ShouldFence_CountsSilenceFromTheLaterOfLastBeatAndDatabaseBack_AndNeverWhileItRestarts(
        int silentMs, int? backAgoMs, bool restarting, bool fence)
    {
        var backSince = backAgoMs is { } b ? Now - b : 0;
        Assert.Equal(fence, FencingRule.ShouldFence(Now, Now - silentMs, backSince, restarting, Interval));
    }
}
