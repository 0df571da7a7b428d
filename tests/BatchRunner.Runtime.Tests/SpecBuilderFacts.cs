using System.Text.Json;
using BatchRunner.Runtime.Spec;

namespace BatchRunner.Runtime.Tests;

public sealed class SpecBuilderFacts
{
    private static readonly ContainerSpec Minimal = new() { Id = "br-1", RootfsPath = "/var/lib/br/rootfs/1", Args = ["python3", "main.py"] };

    private static JsonElement Json(ContainerSpec c) => JsonDocument.Parse(SpecBuilder.ForContainer(c).ToJson()).RootElement;

    private static string[] Strings(JsonElement e) => e.EnumerateArray().Select(x => x.GetString()!).ToArray();

    [Fact]
    public void ForContainer_SetsHardenedProcess_WhenSpecIsMinimal()
    {
        var p = Json(Minimal).GetProperty("process");
        Assert.False(p.GetProperty("terminal").GetBoolean());
        Assert.Equal(["python3", "main.py"], Strings(p.GetProperty("args")));
        Assert.Equal("/", p.GetProperty("cwd").GetString());
        Assert.True(p.GetProperty("noNewPrivileges").GetBoolean());
        Assert.Equal(ContainerSpec.DefaultOomScoreAdj, p.GetProperty("oomScoreAdj").GetInt32());
        Assert.Equal(0u, p.GetProperty("user").GetProperty("uid").GetUInt32());
        Assert.Equal(0u, p.GetProperty("user").GetProperty("gid").GetUInt32());
        Assert.False(p.GetProperty("user").TryGetProperty("additionalGids", out _));
        var caps = p.GetProperty("capabilities");
        foreach (var set in new[] { "bounding", "effective", "permitted", "inheritable", "ambient" })
            Assert.Empty(caps.GetProperty(set).EnumerateArray());
        var rlimit = Assert.Single(p.GetProperty("rlimits").EnumerateArray());
        Assert.Equal("RLIMIT_NOFILE", rlimit.GetProperty("type").GetString());
        Assert.Equal(1024, rlimit.GetProperty("soft").GetInt64());
        Assert.Equal(1024, rlimit.GetProperty("hard").GetInt64());
        Assert.Equal([SpecOpts.DefaultPath], Strings(p.GetProperty("env")));
    }

    [Fact]
    public void ForContainer_KeepsImagePath_WhenEnvHasPath()
    {
        var env = Strings(Json(Minimal with { Env = ["PATH=/opt/bin", "A=1"] }).GetProperty("process").GetProperty("env"));
        Assert.Equal(["PATH=/opt/bin", "A=1"], env);
    }

    [Fact]
    public void ForContainer_SetsUserAndGroups_WhenGiven()
    {
        var u = Json(Minimal with { Uid = 1000, Gid = 100, AdditionalGids = [10, 20] }).GetProperty("process").GetProperty("user");
        Assert.Equal(1000u, u.GetProperty("uid").GetUInt32());
        Assert.Equal(100u, u.GetProperty("gid").GetUInt32());
        Assert.Equal([10u, 20u], u.GetProperty("additionalGids").EnumerateArray().Select(x => x.GetUInt32()));
    }

    [Fact]
    public void ForContainer_SetsRootHostnameAndNamespaces()
    {
        var j = Json(Minimal with { ReadonlyRootfs = true, Hostname = "job-1" });
        Assert.Equal("/var/lib/br/rootfs/1", j.GetProperty("root").GetProperty("path").GetString());
        Assert.True(j.GetProperty("root").GetProperty("readonly").GetBoolean());
        Assert.Equal("job-1", j.GetProperty("hostname").GetString());
        var linux = j.GetProperty("linux");
        Assert.Equal(["pid", "network", "ipc", "uts", "mount"], linux.GetProperty("namespaces").EnumerateArray().Select(n => n.GetProperty("type").GetString()));
        Assert.All(linux.GetProperty("namespaces").EnumerateArray(), n => Assert.False(n.TryGetProperty("path", out _)));
        Assert.Equal("/batchrunner/br-1", linux.GetProperty("cgroupsPath").GetString());
        Assert.Contains("/proc/kcore", Strings(linux.GetProperty("maskedPaths")));
        Assert.Contains("/proc/keys", Strings(linux.GetProperty("maskedPaths")));
        Assert.Contains("/sys/firmware", Strings(linux.GetProperty("maskedPaths")));
        Assert.Contains("/proc/acpi", Strings(linux.GetProperty("maskedPaths")));
        Assert.Contains("/proc/sys", Strings(linux.GetProperty("readonlyPaths")));
        Assert.Contains("/proc/sysrq-trigger", Strings(linux.GetProperty("readonlyPaths")));
        // The default seccomp profile (a denylist over the native architecture; SeccompProfiles).
        Assert.Equal("SCMP_ACT_ALLOW", linux.GetProperty("seccomp").GetProperty("defaultAction").GetString());
        Assert.Contains(linux.GetProperty("seccomp").GetProperty("syscalls").EnumerateArray(),
            r => r.GetProperty("names").EnumerateArray().Any(n => n.GetString() == "unshare"));
    }

    [Fact]
    public void ForContainer_AddsDefaultMountsThenBinds()
    {
        var mounts = Json(Minimal with { Mounts = [new BindMount("/data/in", "/inputs", true), new BindMount("/data/out", "/outputs", false)] })
            .GetProperty("mounts").EnumerateArray().ToDictionary(m => m.GetProperty("destination").GetString()!);
        Assert.Equal(["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup", "/tmp", "/inputs", "/outputs"], mounts.Keys);
        Assert.Equal("proc", mounts["/proc"].GetProperty("type").GetString());
        Assert.Contains("size=65536k", Strings(mounts["/dev/shm"].GetProperty("options")));
        Assert.Contains("ro", Strings(mounts["/sys"].GetProperty("options")));
        Assert.Equal("cgroup", mounts["/sys/fs/cgroup"].GetProperty("type").GetString());
        Assert.Contains("ro", Strings(mounts["/sys/fs/cgroup"].GetProperty("options")));
        Assert.Equal("tmpfs", mounts["/tmp"].GetProperty("type").GetString());
        Assert.Superset(new HashSet<string> { "nosuid", "nodev" }, Strings(mounts["/tmp"].GetProperty("options")).ToHashSet());
        Assert.Equal("bind", mounts["/inputs"].GetProperty("type").GetString());
        Assert.Equal("/data/in", mounts["/inputs"].GetProperty("source").GetString());
        Assert.Equal(["rbind", "ro", "nosuid", "nodev"], Strings(mounts["/inputs"].GetProperty("options")));
        Assert.Equal(["rbind", "rw", "nosuid", "nodev"], Strings(mounts["/outputs"].GetProperty("options")));
    }

    [Fact]
    public void ForContainer_SetsLimits_WhenGiven()
    {
        var r = Json(Minimal with { Cpus = 1.5, MemoryLimitBytes = 256L << 20, PidsLimit = 64 }).GetProperty("linux").GetProperty("resources");
        Assert.Equal(150_000, r.GetProperty("cpu").GetProperty("quota").GetInt64());
        Assert.Equal(100_000, r.GetProperty("cpu").GetProperty("period").GetInt64());
        Assert.Equal(256L << 20, r.GetProperty("memory").GetProperty("limit").GetInt64());
        Assert.Equal(256L << 20, r.GetProperty("memory").GetProperty("swap").GetInt64());
        Assert.Equal(64, r.GetProperty("pids").GetProperty("limit").GetInt64());
    }

    [Fact]
    public void ForContainer_RoundsCpuQuota()
    {
        var cpu = Json(Minimal with { Cpus = 0.333333 }).GetProperty("linux").GetProperty("resources").GetProperty("cpu");
        Assert.Equal(33_333, cpu.GetProperty("quota").GetInt64());
    }

    [Fact]
    public void ForContainer_DeniesAllDevicesFirst_AndOmitsUnsetLimits()
    {
        var r = Json(Minimal).GetProperty("linux").GetProperty("resources");
        var first = r.GetProperty("devices").EnumerateArray().First();
        Assert.Equal("""{"allow":false,"access":"rwm"}""", first.GetRawText().Replace("\n", "").Replace(" ", ""));
        Assert.False(r.TryGetProperty("cpu", out _));
        Assert.False(r.TryGetProperty("memory", out _));
        Assert.False(r.TryGetProperty("pids", out _));
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(-1.0)]
    [InlineData(0.001)]
    public void WithCpus_Throws_WhenBelowKernelMinimum(double cpus) =>
        Assert.Throws<ArgumentOutOfRangeException>(() => SpecOpts.WithCpus(cpus));

    [Fact]
    public void ForContainer_Throws_WhenBindSourceIsRelative() =>
        Assert.Throws<ArgumentException>(() => SpecBuilder.ForContainer(Minimal with { Mounts = [new BindMount("data", "/inputs", true)] }));

    [Fact]
    public void ExtraOptions_RunLast_AndCanAddSeccomp()
    {
        var profile = new System.Text.Json.Nodes.JsonObject { ["defaultAction"] = "SCMP_ACT_ERRNO" };
        var spec = SpecBuilder.ForContainer(Minimal, SpecOpts.WithSeccomp(profile), SpecOpts.WithRlimit("RLIMIT_NOFILE", 4096, 4096));
        Assert.Equal("SCMP_ACT_ERRNO", spec.Linux!.Seccomp!["defaultAction"]!.GetValue<string>());
        Assert.Equal(4096ul, Assert.Single(spec.Process!.Rlimits!).Soft);
    }

    [Fact]
    public void TheSharedDefaultSeccompProfile_IsWrittenAsAFreshCopyOfItIs_AndConfigJsonIsCompactUtf8()
    {
        var spec = SpecBuilder.ForContainer(Minimal);
        var fresh = SpecBuilder.ForContainer(Minimal);
        fresh.Linux!.Seccomp = SeccompProfiles.Default(); // a profile of its own: written node by node
        Assert.NotSame(spec.Linux!.Seccomp, fresh.Linux.Seccomp);
        Assert.Equal(fresh.ToJson(), spec.ToJson());
        Assert.Equal(System.Text.Encoding.UTF8.GetBytes(spec.ToJson()), spec.ToUtf8Json());
        Assert.DoesNotContain('\n', spec.ToJson());
        // Two containers' specs share the one profile object, which writing leaves as it was.
        Assert.Same(spec.Linux.Seccomp, SpecBuilder.ForContainer(Minimal with { Id = "br-2" }).Linux!.Seccomp);
        Assert.Equal(fresh.ToJson(), spec.ToJson());
    }

    [Fact]
    public void ToJson_RoundTrips()
    {
        var spec = SpecBuilder.ForContainer(Minimal with { MemoryLimitBytes = 1 << 30 });
        var back = RuntimeSpec.FromJson(spec.ToJson());
        Assert.Equal(spec.ToJson(), back.ToJson());
        Assert.Equal("1.0.2", back.OciVersion);
    }
}
