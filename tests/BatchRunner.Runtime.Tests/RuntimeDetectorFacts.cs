using BatchRunner.Runtime.Cgroups;

namespace BatchRunner.Runtime.Tests;

/// <summary>Detection with the real runc 1.1.5 and crun 1.8.1 on this hybrid-cgroup host.</summary>
public sealed class RuntimeDetectorFacts
{
    private readonly RuntimeDetector _detector = new(CgroupVersion.Hybrid);

    [Fact]
    public async Task DetectAsync_PicksRunc_WhenAutoOnHybridHost()
    {
        var s = await _detector.DetectAsync("auto", CancellationToken.None);
        Assert.Equal("runc", s.Name);
        Assert.Equal("/usr/sbin/runc", s.Path);
        Assert.StartsWith("1.1.5", s.Version);
        Assert.Contains("hybrid", s.Reason);
    }

    [Fact]
    public async Task DetectAsync_FallsBackToRunc_WhenCrunRefusesHybridCgroups()
    {
        var s = await _detector.DetectAsync("crun", CancellationToken.None);
        Assert.Equal("runc", s.Name);
        Assert.Contains("crun 1.8.1 refuses", s.Reason);
        Assert.Contains("cgroups in hybrid mode not supported", s.Reason);
    }

    [Fact]
    public async Task DetectAsync_ReportsVersion_WhenGivenAPath()
    {
        var s = await _detector.DetectAsync("/usr/sbin/runc", CancellationToken.None);
        Assert.Equal(("runc", "/usr/sbin/runc"), (s.Name, s.Path));
        Assert.StartsWith("1.1.5", s.Version);
    }

    [Fact]
    public async Task DetectAsync_Throws_WhenPathDoesNotExist()
    {
        var e = await Assert.ThrowsAsync<RuntimeDetectionException>(() => _detector.DetectAsync("/nonexistent/runc", CancellationToken.None));
        Assert.Contains("/nonexistent/runc", e.Message);
    }

    [Fact]
    public async Task DetectAsync_Throws_WhenSettingIsUnknown() =>
        await Assert.ThrowsAsync<RuntimeDetectionException>(() => _detector.DetectAsync("docker", CancellationToken.None));

    [Fact]
    public async Task DetectAsync_PicksRuncWithReason_WhenV2HostHasNoCrun()
    {
        var s = await new RuntimeDetector(CgroupVersion.V2, name => name == "runc" ? "/usr/sbin/runc" : null).DetectAsync("auto", CancellationToken.None);
        Assert.Equal("runc", s.Name);
        Assert.Contains("crun is not installed", s.Reason);
    }

    [Fact]
    public async Task DetectAsync_PicksCrun181_OnV2Host_ThoughItHasNoRunKeep()
    {
        // The real crun 1.8.1 binary, with the host declared pure v2 (where no probe container is needed).
        var s = await new RuntimeDetector(CgroupVersion.V2, name => name == "crun" ? "/usr/bin/crun" : "/usr/sbin/runc").DetectAsync("auto", CancellationToken.None);
        Assert.Equal("crun", s.Name);
        Assert.Equal("1.8.1", s.Version);
        Assert.Equal("/usr/bin/crun", s.Path);
    }

    [Fact]
    public async Task ProbeAsync_ReturnsNull_ForRuncOnThisHost() =>
        Assert.Null(await RuntimeDetector.ProbeAsync("/usr/sbin/runc", CancellationToken.None));
}
