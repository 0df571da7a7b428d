using System.Net;
using System.Net.Sockets;
using BatchRunner.Runtime;
using BatchRunner.Runtime.Network;
using BatchRunner.Testing;

namespace BatchRunner.Runtime.Tests;

/// <summary>
/// Three bridge networks of this fixture's own (own bridge names, /24 subnets in 10.0.0.0/8 and state dirs):
/// one isolating containers from each other (the default), one not and open to the host (AllowHostAccess), one
/// with NAT for egress whose nameserver is its own gateway. Traffic only flows between these namespaces, this
/// host's addresses (the bridges' gateways, test-owned veths) and (NAT test) a network namespace on this host that
/// plays the outside world at a 198.18.0.0/15 (benchmarking) address. Disposing removes the bridges and their
/// iptables rules.
/// </summary>
public sealed class BridgeFixture : IAsyncLifetime
{
    public RuncFixture Runc { get; } = new();
    public RuncRuntime Isolated { get; }
    public RuncRuntime Shared { get; }
    public BridgeNetworkOptions IsolatedNet { get; }
    public BridgeNetworkOptions SharedNet { get; }
    public RuncRuntime Masq { get; }
    public BridgeNetworkOptions MasqNet { get; }
    /// <summary>The "host's" resolv.conf the Isolated runtime copies: a loopback stub plus a real-looking server.</summary>
    public string HostResolvConf { get; }

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
        SharedNet = Net("shared", Random.Shared.Next(128, 255)) with { IsolateContainers = false, AllowHostAccess = true };
        var masqSubnet = $"10.{octet - 50}.{Random.Shared.Next(0, 255)}.0/24";
        MasqNet = Net("masq", 0) with { Subnet = masqSubnet, IpMasq = true, DnsServers = [Gateway(masqSubnet)] };
        HostResolvConf = Path.Combine(Runc.BaseDir, "host-resolv.conf");
        File.WriteAllText(HostResolvConf, "# written by the test\nnameserver 127.0.0.53\nnameserver 192.0.2.53\nsearch corp.example\noptions edns0 trust-ad\n");
        Isolated = new RuncRuntime(Runc.Runtime.Options with { Bridge = IsolatedNet, HostResolvConf = HostResolvConf, AllowHostNetwork = true });
        Shared = new RuncRuntime(Runc.Runtime.Options with { Bridge = SharedNet });
        Masq = new RuncRuntime(Runc.Runtime.Options with { Bridge = MasqNet });
    }

    /// <summary>The bridge's own address on the host: "10.a.b.1" for "10.a.b.0/24".</summary>
    public static string Gateway(string subnet) => subnet[..^4] + "1";

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        await Isolated.CleanupOrphansAsync(Runc.Prefix, CancellationToken.None);
        await Shared.CleanupOrphansAsync(Runc.Prefix, CancellationToken.None);
        await Masq.CleanupOrphansAsync(Runc.Prefix, CancellationToken.None);
        foreach (var net in new[] { IsolatedNet, SharedNet, MasqNet })
        {
            await new BridgeFirewall(net).RemoveAsync(CancellationToken.None);
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

    private string Stdout(ContainerSpec spec) => Text(R.Io(spec.Id).StdoutPath);

    // A stream that got no bytes has no file (CappedLogWriter makes the head with the first write).
    private static string Text(string path) => File.Exists(path) ? File.ReadAllText(path) : "";

    /// <summary>Starts a listener job that prints its address and then what it receives on port 7000.</summary>
    private async Task<(IRunningContainer Container, ContainerSpec Spec, string Address)> StartListenerAsync(RuncRuntime runtime)
    {
        // The address is printed once the port is open, so a sender that reads it never races the listen. The listener's
        // input stays open (a sleep's pipe, not the /dev/null of a background job): at its input's end, nc half-closes
        // the connection, and a sender whose own input had not arrived yet (a loaded machine) then read that end and
        // exited 0 without sending anything.
        var spec = Bridge("sleep 600 | nc -l -p 7000 & while ! netstat -ltn | grep -q ':7000 '; do usleep 10000; done; " +
                          "ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1; wait");
        var c = await StartAsync(runtime, spec);
        var addr = (await Poll.UntilAsync(() => Task.FromResult(Stdout(spec)), s => s.Contains('\n'), Deadline, "listener address")).Trim();
        return (c, spec, addr);
    }

    private async Task<string> RunToEndAsync(RuncRuntime runtime, ContainerSpec spec)
    {
        await using var c = await StartAsync(runtime, spec);
        var exit = await c.WaitAsync(new CancellationTokenSource(Deadline).Token);
        Assert.True(exit.Successful, Text(R.Io(spec.Id).StderrPath));
        return Stdout(spec);
    }

    [Fact]
    public async Task BridgeJobs_GetDifferentAddresses_AndReachNeitherEachOtherNorTheHost_ByDefault()
    {
        var (listener, lspec, addrA) = await StartListenerAsync(fx.Isolated);
        await using (listener)
        await using (var other = await HostVeth.CreateAsync())
        {
            Assert.StartsWith(fx.IsolatedNet.Subnet[..^5], addrA); // "10.x.y."
            var gateway = BridgeFixture.Gateway(fx.IsolatedNet.Subnet);
            using var onGateway = new HostListener(gateway);
            using var onOther = new HostListener(other.Address);

            // Each probe fails at once (reset, unreachable), not by timing out: the rules reject, they do not drop.
            var b = Bridge($"ip -4 -o addr show eth0 | awk '{{print $4}}'; echo to-a | nc -w 2 {addrA} 7000; echo a=$?; " +
                           $"echo to-gw | nc -w 2 {gateway} {onGateway.Port} 2>&1; echo gw=$?; " +
                           $"echo to-host | nc -w 2 {other.Address} {onOther.Port} 2>&1; echo host=$?; " +
                           "nc -w 2 169.254.169.254 80 </dev/null 2>&1; echo metadata=$?");
            var outB = await RunToEndAsync(fx.Isolated, b);
            var addrB = outB.Split('\n')[0].Split('/')[0];
            Assert.NotEqual(addrA, addrB);
            Assert.StartsWith(fx.IsolatedNet.Subnet[..^5], addrB);
            Assert.Contains("a=1", outB);
            Assert.Contains("gw=1", outB);
            Assert.Contains("host=1", outB);
            Assert.Contains("metadata=1", outB);
            Assert.Contains($"can't connect to remote host ({gateway}): Connection refused", outB);
            Assert.Contains($"can't connect to remote host ({other.Address}): Connection refused", outB);
            Assert.Contains("can't connect to remote host (169.254.169.254): Connection refused", outB);
            Assert.Equal(0, onGateway.Accepted);
            Assert.Equal(0, onOther.Accepted);
            Assert.DoesNotContain("to-a", Stdout(lspec));
            await listener.KillAsync(CancellationToken.None);
        }
    }

    [Fact]
    public async Task BridgeJob_ReachesTheHost_WhenHostAccessIsAllowed()
    {
        await RunToEndAsync(fx.Shared, Bridge("true")); // from the first job on, the bridge has its gateway address
        using var onGateway = new HostListener(BridgeFixture.Gateway(fx.SharedNet.Subnet));
        var stdout = await RunToEndAsync(fx.Shared, Bridge($"echo to-gw | nc -w 2 {BridgeFixture.Gateway(fx.SharedNet.Subnet)} {onGateway.Port}; echo gw=$?"));
        Assert.Contains("gw=0", stdout);
        Assert.Equal(1, onGateway.Accepted);
    }

    [Fact]
    public async Task BridgeJob_ReachesPort53OfANameserverOnTheHost_AndNoOtherPortThere()
    {
        await RunToEndAsync(fx.Masq, Bridge("true"));
        var gateway = BridgeFixture.Gateway(fx.MasqNet.Subnet);
        using var dns = new HostListener(gateway, 53);
        using var other = new HostListener(gateway);
        var stdout = await RunToEndAsync(fx.Masq, Bridge(
            $"cat /etc/resolv.conf; nc -w 2 {gateway} 53 </dev/null; echo dns=$?; nc -w 2 {gateway} {other.Port} </dev/null 2>&1; echo other=$?"));
        Assert.Contains($"nameserver {gateway}\n", stdout);
        Assert.Contains("dns=0", stdout);
        Assert.Contains("other=1", stdout);
        Assert.Equal(1, dns.Accepted);
        Assert.Equal(0, other.Accepted);
    }

    // The job listens on every address and talks to itself through 127.0.0.1, which needs its loopback up.
    private const string TalkToItself =
        "ip link show lo | grep -q ',UP' && echo lo=up || echo lo=down; nc -l -p 7001 & " +
        "for i in $(seq 100); do echo self | nc -w 1 127.0.0.1 7001 2>/dev/null && { echo talked=yes; break; }; usleep 50000; done; kill $! 2>/dev/null; true";

    [Fact]
    public async Task BridgeJob_TalksToItselfOver127001()
    {
        var stdout = await RunToEndAsync(fx.Isolated, Bridge(TalkToItself));
        Assert.Contains("lo=up", stdout);
        Assert.Contains("talked=yes", stdout);
    }

    [Fact]
    public async Task NoneJob_TalksToItselfOver127001()
    {
        var stdout = await RunToEndAsync(fx.Isolated, R.Spec(R.NewId(), "sh", "-c", TalkToItself));
        Assert.Contains("lo=up", stdout);
        Assert.Contains("talked=yes", stdout);
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
        var attachment = await net.AttachAsync(id, [], CancellationToken.None);
        Assert.True(File.Exists(attachment.NetnsPath));
        Assert.NotEmpty(Leases(fx.IsolatedNet, id));
        Assert.Contains(attachment.HostInterface!, HostVeths());

        var removed = await fx.Isolated.CleanupOrphansAsync(R.Prefix, CancellationToken.None);
        Assert.Contains(id, removed);
        Assert.False(File.Exists(attachment.NetnsPath));
        Assert.Empty(Leases(fx.IsolatedNet, id));
        Assert.DoesNotContain(attachment.HostInterface!, HostVeths());
    }

    [Fact]
    public async Task BridgeJob_GetsHostsHostnameAndResolvConf_WithoutLoopbackNameservers()
    {
        var spec = Bridge("ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1; echo ==; cat /etc/hostname; echo ==; cat /etc/hosts; echo ==; cat /etc/resolv.conf");
        var parts = (await RunToEndAsync(fx.Isolated, spec)).Split("==\n");
        var address = parts[0].Trim();
        Assert.Equal("batchrunner\n", parts[1]);
        Assert.Contains("127.0.0.1\tlocalhost", parts[2]);
        Assert.Contains($"{address}\tbatchrunner", parts[2]);
        // The host's loopback stub is unreachable from the bridge: only the other server, and search/options, remain.
        Assert.Equal("nameserver 192.0.2.53\nsearch corp.example\noptions edns0 trust-ad\n", parts[3]);
    }

    [Fact]
    public async Task NoneAndHostJobs_GetTheirNameFiles_HostKeepsLoopbackNameservers()
    {
        // (The busybox rootfs is shared by the tests, not an overlay: other jobs' mount points may be left in it.)
        var none = R.Spec(R.NewId(), "sh", "-c", "cat /etc/hosts; echo ==; cat /etc/resolv.conf 2>/dev/null | grep -c nameserver; true");
        var noneOut = (await RunToEndAsync(fx.Isolated, none)).Split("==\n");
        Assert.Contains("127.0.1.1\tbatchrunner", noneOut[0]);
        Assert.Equal("0\n", noneOut[1]); // a job without a network gets no resolver configuration

        var host = R.Spec(R.NewId(), "sh", "-c", "cat /etc/hosts; echo ==; cat /etc/resolv.conf") with { Network = ContainerNetworkMode.Host };
        var hostOut = (await RunToEndAsync(fx.Isolated, host)).Split("==\n");
        Assert.StartsWith(File.ReadAllText("/etc/hosts").TrimEnd('\n'), hostOut[0]);
        Assert.EndsWith("127.0.1.1\tbatchrunner\n", hostOut[0]);
        Assert.Equal("nameserver 127.0.0.53\nnameserver 192.0.2.53\nsearch corp.example\noptions edns0 trust-ad\n", hostOut[1]);
    }

    [Fact]
    public async Task BridgeJob_EgressIsMasqueraded_ToTheHostsAddress()
    {
        // "Outside": a namespace behind a veth on this host, 198.18.N.2, reached through the host's routing
        // (host side 198.18.N.1). With NAT the connection arrives from 198.18.N.1, never from the job's 10.x address.
        var tag = Guid.NewGuid().ToString("N")[..6];
        var ns = "br-test-out-" + tag;
        var (hostIf, peerIf) = ("bro" + tag, "bri" + tag);
        var n = Random.Shared.Next(0, 255);
        string hostAddr = $"198.18.{n}.1", outsideAddr = $"198.18.{n}.2";
        async Task Ip(params string[] args) => await ExternalCommand.RunAsync("ip", args);
        await Ip("netns", "add", ns);
        System.Diagnostics.Process? listener = null;
        try
        {
            await Ip("link", "add", hostIf, "type", "veth", "peer", "name", peerIf);
            await Ip("link", "set", peerIf, "netns", ns);
            await Ip("addr", "add", hostAddr + "/30", "dev", hostIf);
            await Ip("link", "set", hostIf, "up");
            await Ip("-n", ns, "addr", "add", outsideAddr + "/30", "dev", peerIf);
            await Ip("-n", ns, "link", "set", peerIf, "up");
            await Ip("-n", ns, "link", "set", "lo", "up");
            // No route back to the bridge's subnet: an un-NATed reply would be lost, as on the Internet.
            listener = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo("ip", ["netns", "exec", ns, "busybox", "nc", "-l", "-p", "7100"])
                { RedirectStandardOutput = true, RedirectStandardInput = true })!;
            await Poll.UntilAsync(() => ExternalCommand.RunAsync("ip", ["netns", "exec", ns, "ss", "-Htln"]), s => s.Contains(":7100"), Deadline, "listener in the outside namespace");

            var spec = Bridge($"ip -4 -o addr show eth0 | awk '{{print $4}}' | cut -d/ -f1; (echo hello-outside; sleep 3) | nc -w 5 {outsideAddr} 7100; echo nc=$?") with { };
            await using var c = await StartAsync(fx.Masq, spec);
            var established = await Poll.UntilAsync(() => ExternalCommand.RunAsync("ip", ["netns", "exec", ns, "ss", "-Htn", "state", "established"]),
                s => s.Contains(":7100"), Deadline, "connection from the job");
            var exit = await c.WaitAsync(new CancellationTokenSource(Deadline).Token);
            var stdout = Stdout(spec);
            var jobAddress = stdout.Split('\n')[0].Trim();
            Assert.StartsWith(fx.MasqNet.Subnet[..^5], jobAddress);
            Assert.True(established.Contains(hostAddr) && !established.Contains(jobAddress), $"job {jobAddress}, outside saw: {established}");
            Assert.True(exit.Successful, Text(R.Io(spec.Id).StderrPath));
            Assert.Contains("nc=0", stdout);
            Assert.Equal("hello-outside", (await listener.StandardOutput.ReadLineAsync().WaitAsync(Deadline))?.Trim());
        }
        finally
        {
            if (listener is { HasExited: false }) listener.Kill();
            listener?.Dispose();
            try { await Ip("link", "delete", hostIf); } catch (InvalidOperationException) { }
            await Ip("netns", "delete", ns);
        }
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

/// <summary>A TCP listener on one of this host's addresses that accepts and closes every connection, counting them.</summary>
internal sealed class HostListener : IDisposable
{
    private readonly TcpListener _listener;
    private int _accepted;

    public HostListener(string address, int port = 0)
    {
        _listener = new TcpListener(IPAddress.Parse(address), port);
        _listener.Start();
        Port = ((IPEndPoint)_listener.LocalEndpoint).Port;
        _ = Task.Run(async () =>
        {
            try
            {
                while (true)
                {
                    using var client = await _listener.AcceptTcpClientAsync();
                    Interlocked.Increment(ref _accepted);
                }
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException) { /* stopped */ }
        });
    }

    public int Port { get; }
    public int Accepted => Volatile.Read(ref _accepted);
    public void Dispose() => _listener.Stop();
}

/// <summary>One more address of this host, on a veth pair of the test's own (198.19.N.1), removed on dispose.</summary>
internal sealed class HostVeth : IAsyncDisposable
{
    private readonly string _name;

    private HostVeth(string name, string address) { _name = name; Address = address; }

    public string Address { get; }

    public static async Task<HostVeth> CreateAsync()
    {
        var tag = Guid.NewGuid().ToString("N")[..6];
        var veth = new HostVeth("brh" + tag, $"198.19.{Random.Shared.Next(0, 255)}.1");
        await ExternalCommand.RunAsync("ip", ["link", "add", veth._name, "type", "veth", "peer", "name", "brp" + tag]);
        try
        {
            await ExternalCommand.RunAsync("ip", ["addr", "add", veth.Address + "/32", "dev", veth._name]);
            await ExternalCommand.RunAsync("ip", ["link", "set", veth._name, "up"]);
            return veth;
        }
        catch
        {
            await veth.DisposeAsync();
            throw;
        }
    }

    public async ValueTask DisposeAsync() => await ExternalCommand.RunAsync("ip", ["link", "delete", _name]);
}
