namespace BatchRunner.Runtime.Tests;

public sealed class OomScoreFacts
{
    [Theory]
    [InlineData("CapEff:\t000001ffffffffff", true)]  // root on a normal host
    [InlineData("CapEff:\t000001fffeffffff", false)] // root in a container without CAP_SYS_RESOURCE (bit 24), as on this project's machines
    [InlineData("CapEff:\t0000000000000000", false)] // an unprivileged user
    public void HasEffectiveCapability_ReadsCapSysResourceFromStatus(string capEff, bool expected) =>
        Assert.Equal(expected, OomScore.HasEffectiveCapability(["Name:\tbatchrunner", "CapInh:\t0000000000000000", capEff, "CapBnd:\t000001ffffffffff"], 24));

    [Fact]
    public void Read_ReturnsThisProcesssScore() =>
        Assert.Equal(int.Parse(File.ReadAllText("/proc/self/oom_score_adj").Trim()), OomScore.Read(Environment.ProcessId));
}
