using BatchRunner.Runtime.Logs;
using BatchRunner.Runtime.Gpus;
using BatchRunner.Runtime.Spec;
using BatchRunner.Testing;

namespace BatchRunner.Runtime.Tests.Gpus;

/// <summary>One fake GPU node, its CDI inventory and a busybox rootfs of its own (the ld.so.cache hook writes into it).</summary>
public sealed class GpuRuncFixture : IAsyncLifetime
{
    private int _next;
    public string Prefix { get; } = "br-test-gpu-" + Guid.NewGuid().ToString("N")[..8] + "-";
    public string BaseDir { get; }
    public string Rootfs { get; }
    public GpuTestNode Node { get; }
    public GpuInventory Inventory { get; private set; } = GpuInventory.None;

    public GpuRuncFixture()
    {
        BaseDir = Path.Combine(RuncFixture.TestsRoot, Prefix.TrimEnd('-'));
        Rootfs = BusyboxRootfs.Create(Path.Combine(BaseDir, "rootfs"));
        Node = new GpuTestNode(Path.Combine(BaseDir, "node"));
    }

    public async Task InitializeAsync() => Inventory = await Node.DiscoverAsync(Node.JsonCdiDir);

    public RuncRuntime Runtime(params SpecOpt[] extra) =>
        new(new RuncRuntimeOptions { BinaryPath = "/usr/sbin/runc", StateRoot = RuncFixture.StateRoot, ExtraSpecOptions = extra });

    /// <summary>Runs <paramref name="script"/> to the end; returns exit code, stdout, stderr.</summary>
    public async Task<(int Exit, string Out, string Err)> RunAsync(string script, params SpecOpt[] extra)
    {
        var id = Prefix + Interlocked.Increment(ref _next);
        var io = new ContainerIo(Path.Combine(BaseDir, id + ".out"), Path.Combine(BaseDir, id + ".err"));
        var spec = new ContainerSpec { Id = id, RootfsPath = Rootfs, Args = ["sh", "-c", script], ReadonlyRootfs = true };
        await using var c = await Runtime(extra).StartAsync(spec, Path.Combine(BaseDir, "bundles", id), io, CancellationToken.None);
        var exit = await c.WaitAsync(new CancellationTokenSource(TimeSpan.FromSeconds(30)).Token);
        return (exit.ExitCode, await StoredLog.ReadAllTextAsync(io.StdoutPath, "stdout"), await StoredLog.ReadAllTextAsync(io.StderrPath, "stderr"));
    }

    public async Task DisposeAsync()
    {
        await Runtime().CleanupOrphansAsync(Prefix, CancellationToken.None);
        Directory.Delete(BaseDir, recursive: true);
    }
}

/// <summary>GPU injection with real runc on fake device nodes (no GPU needed).</summary>
public sealed class GpuInjectionFacts(GpuRuncFixture fx) : IClassFixture<GpuRuncFixture>
{
    private const string Probe =
        "ls /dev | grep nvidia | tr '\\n' ' '; echo; " +
        "for d in /dev/nvidia*; do echo \"$d $(stat -c '%t:%T' $d)\"; done; " +
        "exec 3<" + "$GPU && echo opened-gpu; exec 3<&-; " +
        "exec 4</dev/nvidiactl && echo opened-ctl; " +
        "cat " + GpuTestNode.LibraryContainerPath + "; " +
        "env | grep -E 'VISIBLE_DEVICES|DRIVER_CAPABILITIES' | sort; " +
        "test -s /etc/ld.so.cache && echo ld-cache-written";

    private static SpecOpt WithCapMknod() => s =>
    {
        var c = s.Process!.Capabilities!;
        foreach (var set in new[] { c.Bounding, c.Effective, c.Permitted }) set.Add("CAP_MKNOD");
    };

    [Fact]
    public async Task Container_SeesExactlyItsGpu_WithLibraryEnvAndLdCache_WhenAssignedOne()
    {
        var gpu = fx.Inventory.Gpus[1]; // host node numbers 10:237
        File.Delete(Path.Combine(fx.Rootfs, "etc", "ld.so.cache")); // the rootfs is shared by this class's tests
        var (exit, stdout, stderr) = await fx.RunAsync("GPU=/dev/nvidia1; " + Probe, GpuSpecOpts.WithGpus([gpu], fx.Inventory.Common));

        Assert.True(exit == 0, $"exit {exit}: {stderr}");
        var lines = stdout.Split('\n');
        Assert.Equal("nvidia1 nvidiactl ", lines[0]);
        Assert.Contains("/dev/nvidia1 a:ed", lines);  // 10:237 in stat's hex
        Assert.Contains("/dev/nvidiactl 1:3", lines);
        Assert.Contains("opened-gpu", lines);
        Assert.Contains("opened-ctl", lines);
        Assert.Contains(GpuTestNode.LibraryContent.TrimEnd(), lines);
        Assert.Contains("CUDA_VISIBLE_DEVICES=0", lines);
        Assert.Contains("NVIDIA_VISIBLE_DEVICES=GPU-test-1", lines);
        Assert.Contains("NVIDIA_DRIVER_CAPABILITIES=compute,utility", lines);
        Assert.Contains("ld-cache-written", lines);
    }

    [Fact]
    public async Task Container_SeesGpuAsNvidia0_WhenRenumbering()
    {
        var gpu = fx.Inventory.Gpus[1];
        var (exit, stdout, stderr) = await fx.RunAsync("GPU=/dev/nvidia0; " + Probe,
            GpuSpecOpts.WithGpus([gpu], fx.Inventory.Common, new GpuInjectionOptions { RenumberDeviceNodes = true }));

        Assert.True(exit == 0, $"exit {exit}: {stderr}");
        var lines = stdout.Split('\n');
        Assert.Equal("nvidia0 nvidiactl ", lines[0]);
        Assert.Contains("/dev/nvidia0 a:ed", lines);
        Assert.Contains("opened-gpu", lines);
    }

    [Fact]
    public async Task Container_SeesBothGpus_NumberedInAssignmentOrder_WhenAssignedTwo()
    {
        var (exit, stdout, stderr) = await fx.RunAsync("ls /dev | grep nvidia | tr '\\n' ' '; echo; env | grep VISIBLE_DEVICES | sort",
            GpuSpecOpts.WithGpus(fx.Inventory.Gpus, fx.Inventory.Common));
        Assert.True(exit == 0, $"exit {exit}: {stderr}");
        Assert.Equal("nvidia0 nvidia1 nvidiactl \nCUDA_VISIBLE_DEVICES=0,1\nNVIDIA_VISIBLE_DEVICES=GPU-test-0,GPU-test-1\n", stdout);
    }

    [Fact]
    public async Task Container_SeesNoGpu_AndCannotMknodOne_WhenAssignedNone()
    {
        var (exit, stdout, stderr) = await fx.RunAsync(
            "ls /dev | grep -c nvidia; cat /usr/lib/x86_64-linux-gnu/libcuda.so.1 2>/dev/null | grep -c fake; env | grep -c VISIBLE_DEVICES; " +
            "mknod /dev/gpu c 10 237 && echo mknod-ok || echo mknod-denied",
            GpuSpecOpts.WithGpus([], fx.Inventory.Common));
        Assert.Equal("0\n0\n0\nmknod-denied\n", stdout);
        Assert.Contains("Operation not permitted", stderr);
        Assert.Equal(0, exit);
    }

    [Fact]
    public async Task DeviceCgroup_DeniesOpeningAGpuNode_EvenWhenMknodIsAllowed()
    {
        // CAP_MKNOD is given here on purpose (jobs never have it) to show the second wall: the device cgroup.
        var (_, stdout, stderr) = await fx.RunAsync(
            "mknod /dev/gpu c 10 237 && echo mknod-ok; (exec 3</dev/gpu) 2>/dev/null && echo open-ok || echo open-denied; " +
            "(exec 3</dev/gpu) 2>&1 | head -1 >&2",
            WithCapMknod());
        Assert.Equal("mknod-ok\nopen-denied\n", stdout);
        Assert.Contains("Operation not permitted", stderr);
    }

    [Fact]
    public void WithGpus_Throws_WhenDenyAllRuleIsMissing()
    {
        var spec = new RuntimeSpec { Root = new RootSpec { Path = "/x" } };
        Assert.Throws<InvalidOperationException>(() => GpuSpecOpts.WithGpus(fx.Inventory.Gpus, fx.Inventory.Common)(spec));
    }

    [Fact]
    public void WithGpus_AddsAllowRulesForExactlyTheInjectedNodes_AfterDenyAll()
    {
        var c = new ContainerSpec { Id = "br-x", RootfsPath = "/rootfs", Args = ["true"] };
        var spec = SpecBuilder.ForContainer(c, GpuSpecOpts.WithGpus([fx.Inventory.Gpus[1]], fx.Inventory.Common));
        var rules = spec.Linux!.Resources!.Devices!;
        Assert.False(rules[0].Allow);
        Assert.Equal([("c", 1L, 3L), ("c", 10L, 237L)], rules.Skip(1).Select(r => (r.Type!, r.Major!.Value, r.Minor!.Value)));
        Assert.All(rules.Skip(1), r => Assert.True(r.Allow));
        Assert.Equal(["/dev/nvidiactl", "/dev/nvidia1"], spec.Linux.Devices!.Select(d => d.Path));
        var hook = Assert.Single(spec.Hooks!.CreateContainer!);
        Assert.Equal(["/sbin/ldconfig", "/rootfs", "/usr/lib/x86_64-linux-gnu"], hook.Args!.Skip(3));
        var lib = spec.Mounts!.Single(m => m.Destination == GpuTestNode.LibraryContainerPath);
        Assert.Equal(["ro", "nosuid", "nodev", "bind"], lib.Options);
    }
}
