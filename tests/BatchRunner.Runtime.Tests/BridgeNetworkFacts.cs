using System.Net;
using System.Net.Sockets;
using BatchRunner.Runtime;
using BatchRunner.Runtime.Network;
using BatchRunner.Testing;

namespace BatchRunner.Runtime.Tests;

/// <summary>
/// Two bridge networks of this fixture's own (own bridge names, /24 subnets in 10.0.0.0/8 and state dirs):
/// one isolating containers from each other (the default), one not. Traffic only flows between these
/// namespaces and the bridges' gateway addresses on this host.
/// </summary>
public sealed class BridgeFixture : IAsyncLifetime
{
    public RuncFixture Runc { get; } = new();
    public RuncRuntime Isolated { get; }
    public RuncRuntime Shared { get; }
    public BridgeNetworkOptions IsolatedNet { get; }
    public BridgeNetworkOptions SharedNet { get; }

    public BridgeFixture()
    {
        var tag = Guid.NewGuid().ToString("N")[..6];
        var octet = Random.Shared.Next(100, 250);
        BridgeNetworkOptions Net(string name, int third) => new()
        {
            NetworkName = $"brtest-{name}-{tag}",
            BridgeName = $"brt{name[0]}{tag}",
            Subnet = $"10.{octet}.{third}.0/24",
            StateDir = Path.Combine("/run/batchrunner-runtime-tests", "cni-" + name + "-" + tag),
            IpMasq = false, // nothing here leaves the host
        };
        IsolatedNet = Net("iso", Random.Shared.Next(0, 127));
        SharedNet = Net("shared", Random.Shared.Next(128, 255)) with { IsolateContainers = false };
        Isolated = new RuncRuntime(Runc.Runtime.Options with { Bridge = IsolatedNet });
        Shared = new RuncRuntime(Runc.Runtime.Options with { Bridge = SharedNet });
    }

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        await Isolated.CleanupOrphansAsync(Runc.Prefix, CancellationToken.None);
        await Shared.CleanupOrphansAsync(Runc.Prefix, CancellationToken.None);
        foreach (var net in new[] { IsolatedNet, SharedNet })
        {
            try { await ExternalCommand.RunAsync("ip", ["link", "delete", net.BridgeName]); } catch (InvalidOperationException) { }
            if (Directory.Exists(net.StateDir)) Directory.Delete(net.StateDir, recursive: true);
        }
        await Runc.DisposeAsync();
    }
}

public sealed class BridgeNetworkFacts(BridgeFixture fx) : IClassFixture<BridgeFixture>
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);
    private RuncFixture R => fx.Runc;

    private ContainerSpec Bridge(string script) =>
        R.Spec(R.NewId(), "sh", "-c", script) with { Network = ContainerNetworkMode.Bridge };

    private Task<IRunningContainer> StartAsync(RuncRuntime runtime, ContainerSpec spec) =>
        runtime.StartAsync(spec, R.BundleDir(spec.Id), R.Io(spec.Id), CancellationToken.None);

    private string Stdout(ContainerSpec spec) => File.ReadAllText(R.Io(spec.Id).StdoutPath);

    /// <summary>Starts a listener job that prints its address and then what it receives on port 7000.</summary>
    private async Task<(IRunningContainer Container, ContainerSpec Spec, string Address)> StartListenerAsync(RuncRuntime runtime)
    {
        var spec = Bridge("ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1; exec nc -l -p 7000");
        var c = await StartAsync(runtime, spec);
        var addr = (await Poll.UntilAsync(() => Task.FromResult(Stdout(spec)), s => s.Contains('\n'), Deadline, "listener address")).Trim();
        return (c, spec, addr);
    }

    private async Task<string> RunToEndAsync(RuncRuntime runtime, ContainerSpec spec)
    {
        await using var c = await StartAsync(runtime, spec);
        var exit = await c.WaitAsync(new CancellationTokenSource(Deadline).Token);
        Assert.True(exit.Successful, File.ReadAllText(R.Io(spec.Id).StderrPath));
        return Stdout(spec);
    }

    [Fact]
    public async Task BridgeJobs_GetDifferentAddresses_ReachTheGateway_ButNotEachOther_ByDefault()
    {
        var (listener, lspec, addrA) = await StartListenerAsync(fx.Isolated);
        await using (listener)
        {
            Assert.StartsWith(fx.IsolatedNet.Subnet[..^5], addrA); // "10.x.y."
            var gateway = fx.IsolatedNet.Subnet[..^4] + "1";
            using var host = new TcpListener(IPAddress.Parse(gateway), 0);
            host.Start();
            var port = ((IPEndPoint)host.LocalEndpoint).Port;
            var accept = Task.Run(async () =>
            {
                using var client = await host.AcceptTcpClientAsync();
                return (await new StreamReader(client.GetStream()).ReadLineAsync())?.Trim();
            });

            var b = Bridge($"ip -4 -o addr show eth0 | awk '{{print $4}}'; echo to-a | nc -w 2 {addrA} 7000; echo a=$?; echo to-gw | nc -w 2 {gateway} {port}; echo gw=$?");
            var outB = await RunToEndAsync(fx.Isolated, b);
            var addrB = outB.Split('\n')[0].Split('/')[0];
            Assert.NotEqual(addrA, addrB);
            Assert.StartsWith(fx.IsolatedNet.Subnet[..^5], addrB);
            Assert.Contains("a=1", outB);
            Assert.Contains("gw=0", outB);
            Assert.Equal("to-gw", await accept.WaitAsync(Deadline));
            Assert.DoesNotContain("to-a", Stdout(lspec));
            await listener.KillAsync(CancellationToken.None);
        }
    }

    [Fact]
    public async Task BridgeJobs_ReachEachOther_WhenIsolationIsOff()
    {
        var (listener, lspec, addrA) = await StartListenerAsync(fx.Shared);
        await using (listener)
        {
            var outB = await RunToEndAsync(fx.Shared, Bridge($"echo hello-a | nc -w 2 {addrA} 7000; echo a=$?"));
            Assert.Contains("a=0", outB);
            await Poll.UntilAsync(() => Task.FromResult(Stdout(lspec)), s => s.Contains("hello-a"), Deadline, "message from B");
        }
    }

    [Fact]
    public async Task BridgeJob_RunsInAUserNamespace_WithTheHostsSysBoundReadOnly()
    {
        // The netns is made outside the container's user namespace, so sysfs cannot be mounted fresh:
        // the runtime binds the host's /sys read-only instead. Check that the combination starts.
        var rootfs = BusyboxRootfs.Create(Path.Combine(R.BaseDir, "userns-bridge-rootfs"));
        var runtime = new RuncRuntime(fx.Isolated.Options with { UserNamespace = new UserNamespaceOptions(331_072, 331_072, 65536) });
        var spec = new ContainerSpec
        {
            Id = R.NewId(), RootfsPath = rootfs, ReadonlyRootfs = true, Network = ContainerNetworkMode.Bridge,
            Args = ["sh", "-c", "head -1 /proc/self/uid_map | awk '{print $2}'; ip -4 -o addr show eth0 | awk '{print $4}'; touch /sys/x 2>/dev/null && echo SYS-RW || echo sys-ro"],
        };
        var stdout = await RunToEndAsync(runtime, spec);
        var lines = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("331072", lines[0]);
        Assert.StartsWith(fx.IsolatedNet.Subnet[..^5], lines[1]);
        Assert.Equal("sys-ro", lines[2]);
    }

    [Fact]
    public async Task Dispose_RemovesNamespaceLeaseAndVeth()
    {
        var spec = Bridge("ip -4 -o addr show eth0");
        var veths = HostVeths();
        await RunToEndAsync(fx.Isolated, spec);
        Assert.False(File.Exists(Path.Combine("/run/netns", spec.Id)));
        Assert.Empty(Leases(fx.IsolatedNet, spec.Id));
        Assert.Empty(Directory.EnumerateFiles(Path.Combine(fx.IsolatedNet.StateDir, "results"), spec.Id + "*"));
        Assert.Empty(HostVeths().Except(veths));
    }

    [Fact]
    public async Task CleanupOrphans_RemovesTheNetworkOfACrashedWorker()
    {
        // A worker that died between attach and start: a namespace with an address and a veth, no container.
        var id = R.NewId();
        var net = new CniBridgeNetwork(fx.IsolatedNet);
        var attachment = await net.AttachAsync(id, CancellationToken.None);
        Assert.True(File.Exists(attachment.NetnsPath));
        Assert.NotEmpty(Leases(fx.IsolatedNet, id));
        Assert.Contains(attachment.HostInterface!, HostVeths());

        var removed = await fx.Isolated.CleanupOrphansAsync(R.Prefix, CancellationToken.None);
        Assert.Contains(id, removed);
        Assert.False(File.Exists(attachment.NetnsPath));
        Assert.Empty(Leases(fx.IsolatedNet, id));
        Assert.DoesNotContain(attachment.HostInterface!, HostVeths());
    }

    private static IEnumerable<string> Leases(BridgeNetworkOptions net, string id)
    {
        var dir = Path.Combine(net.StateDir, "ipam", net.NetworkName);
        if (!Directory.Exists(dir)) return [];
        return Directory.EnumerateFiles(dir).Where(f => File.ReadAllText(f).StartsWith(id + "\r", StringComparison.Ordinal) || File.ReadAllText(f).Trim() == id).ToList();
    }

    private static List<string> HostVeths() =>
        Directory.GetDirectories("/sys/class/net").Select(Path.GetFileName).Where(n => n!.StartsWith("veth", StringComparison.Ordinal)).Select(n => n!).ToList();
}
