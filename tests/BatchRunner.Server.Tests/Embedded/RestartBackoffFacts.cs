using BatchRunner.Server.Storage.Embedded;

namespace BatchRunner.Server.Tests.Embedded;

public sealed class RestartBackoffFacts
{
    [Fact]
    public void Next_RestartsAtOnce_ThenBacksOffUpToTheMax()
    {
        var b = new RestartBackoff();
        var delays = Enumerable.Range(0, 12).Select(_ => b.Next()).ToList();
        Assert.Equal(TimeSpan.Zero, delays[0]);
        Assert.True(delays.Zip(delays.Skip(1)).All(p => p.First <= p.Second), string.Join(", ", delays));
        Assert.Equal(RestartBackoff.Max, delays[^1]);
    }

    [Fact]
    public void Died_StartsOverAtOnce_OnlyAfterAStableRun()
    {
        var b = new RestartBackoff();
        b.Next();
        b.Next();
        b.Died(TimeSpan.FromSeconds(5)); // a crash loop keeps backing off
        Assert.True(b.Next() > TimeSpan.Zero);
        b.Died(RestartBackoff.StableAfter);
        Assert.Equal(TimeSpan.Zero, b.Next());
    }
}
