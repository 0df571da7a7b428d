using BatchRunner.Core;
using BatchRunner.Runtime.Cgroups;

namespace BatchRunner.Runtime.Tests;

/// <summary>The readers on captured cgroup trees (see cgroups/README.md).</summary>
public sealed class CgroupStatsFacts
{
    private static string Tree(string name) => Path.Combine(AppContext.BaseDirectory, "cgroups", name);

    [Fact]
    public void V1Reader_ReadsEveryCounter_FromCapturedTree()
    {
        var usage = new CgroupV1Reader(Tree("v1"), "/batchrunner/br-capture").Read();
        Assert.Equal(new ResourceUsage
        {
            CpuSeconds = 934679506 / 1e9,
            CpuUserSeconds = 0.66,
            CpuSystemSeconds = 0.26,
            CpuThrottledPeriods = 17,
            CpuThrottledSeconds = 1327990733 / 1e9,
            MemoryBytes = 21999616,
            MaxMemoryBytes = 67108864,
            OomKills = 1,
            Pids = 0,
            PidsLimitHits = 1,
        }, usage);
    }

    [Fact]
    public void ReadSmallFile_ReadsAFileOfAnySize_WholeAndOnlyWhole_AndNullWhenItCannotBeOpened()
    {
        var dir = Directory.CreateTempSubdirectory("br-readsmall-");
        try
        {
            // Over the first 4 KiB buffer (the reader grows it), and empty.
            var big = string.Concat(Enumerable.Range(0, 2000).Select(i => $"key{i} {i}\n"));
            File.WriteAllText(Path.Combine(dir.FullName, "big"), big);
            File.WriteAllText(Path.Combine(dir.FullName, "empty"), "");
            Assert.True(big.Length > 4096 * 4);
            Assert.Equal(big, Native.Libc.ReadSmallFile(Path.Combine(dir.FullName, "big")));
            Assert.Equal("", Native.Libc.ReadSmallFile(Path.Combine(dir.FullName, "empty")));
            Assert.Null(Native.Libc.ReadSmallFile(Path.Combine(dir.FullName, "missing")));
            Assert.Null(Native.Libc.ReadSmallFile(dir.FullName)); // a directory: read fails (EISDIR)
            // A real kernel file, as the readers use it.
            Assert.StartsWith("cpu ", Native.Libc.ReadSmallFile("/proc/stat"));
        }
        finally { dir.Delete(recursive: true); }
    }

    [Fact]
    public void V1Reader_ReturnsNulls_WhenCgroupIsMissing()
    {
        var reader = new CgroupV1Reader(Tree("v1"), "/batchrunner/br-missing");
        Assert.Equal(ResourceUsage.Empty, reader.Read());
        Assert.Null(reader.ReadOomKills());
        Assert.Empty(reader.ReadPids());
    }

    [Fact]
    public void V1Reader_FindsJoinedCpuHierarchy_WhenCpuAndCpuacctShareAMount()
    {
        var root = Path.Combine(Path.GetTempPath(), "br-cg-" + Guid.NewGuid().ToString("N"));
        try
        {
            var dir = Directory.CreateDirectory(Path.Combine(root, "cpu,cpuacct", "batchrunner", "br-x")).FullName;
            File.WriteAllText(Path.Combine(dir, "cpuacct.usage"), "2500000000\n");
            File.WriteAllText(Path.Combine(dir, "cpu.stat"), "nr_periods 10\nnr_throttled 4\nthrottled_time 300000000\n");
            var usage = new CgroupV1Reader(root, "batchrunner/br-x").Read();
            Assert.Equal(2.5, usage.CpuSeconds);
            Assert.Equal(4, usage.CpuThrottledPeriods);
            Assert.Equal(0.3, usage.CpuThrottledSeconds);
            Assert.Null(usage.MemoryBytes);
        }
        finally { Directory.Delete(root, true); }
    }

    [Fact]
    public void V2Reader_ReadsEveryCounter_FromCapturedTree()
    {
        var reader = new CgroupV2Reader(Tree("v2"), "/batchrunner/br-capture");
        Assert.Equal(new ResourceUsage
        {
            CpuSeconds = 1.523456,
            CpuUserSeconds = 1.023456,
            CpuSystemSeconds = 0.5,
            CpuThrottledPeriods = 12,
            CpuThrottledSeconds = 0.845,
            MemoryBytes = 31457280,
            MaxMemoryBytes = 33554432,
            OomKills = 2,
            Pids = 3,
            PidsLimitHits = 5,
        }, reader.Read());
        Assert.Equal([1234, 1240, 1241], reader.ReadPids());
    }

    [Fact]
    public void V2Reader_LeavesPeakAndPidsEventsNull_OnOlderKernel()
    {
        var usage = new CgroupV2Reader(Tree("v2-old"), "/batchrunner/br-capture").Read();
        Assert.Null(usage.MaxMemoryBytes);
        Assert.Null(usage.PidsLimitHits);
        Assert.Equal(1048576, usage.MemoryBytes);
        Assert.Equal(0, usage.OomKills);
        Assert.Equal(2.0, usage.CpuSeconds);
    }

    [Fact]
    public void For_PicksV1Reader_OnHybridHosts()
    {
        Assert.IsType<CgroupV1Reader>(CgroupStats.For(CgroupVersion.Hybrid, "/batchrunner/x", Tree("v1")));
        Assert.IsType<CgroupV2Reader>(CgroupStats.For(CgroupVersion.V2, "/batchrunner/x", Tree("v2")));
    }
}

public sealed class CgroupVersionDetectorFacts
{
    private const string Hybrid = """
        30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
        31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
        34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
        40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
        """;

    private const string V1 = """
        25 22 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
        28 25 0:25 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,cpu,cpuacct
        29 25 0:26 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,memory
        """;

    private const string V2 = """
        22 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
        26 22 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
        """;

    [Theory]
    [InlineData(Hybrid, CgroupVersion.Hybrid)]
    [InlineData(V1, CgroupVersion.V1)]
    [InlineData(V2, CgroupVersion.V2)]
    public void Parse_ClassifiesMountInfo(string mountInfo, CgroupVersion expected) =>
        Assert.Equal(expected, CgroupVersionDetector.Parse(mountInfo));

    [Fact]
    public void Parse_Throws_WhenNoCgroupIsMounted() =>
        Assert.Throws<InvalidOperationException>(() => CgroupVersionDetector.Parse("22 28 0:21 / /sys rw - sysfs sysfs rw"));

    [Fact]
    public void Detect_FindsHybrid_OnThisHost() =>
        // The dev/CI host: v1 controllers plus a cgroup2 mount at /sys/fs/cgroup/unified (see FACTS.md).
        Assert.Equal(CgroupVersion.Hybrid, CgroupVersionDetector.Detect());
}
