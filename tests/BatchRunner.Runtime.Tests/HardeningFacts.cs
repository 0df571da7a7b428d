using BatchRunner.Runtime.Logs;
using System.Net;
using System.Net.Sockets;
using BatchRunner.Core;
using BatchRunner.Runtime;
using BatchRunner.Testing;

namespace BatchRunner.Runtime.Tests;

/// <summary>What a hostile job cannot do, and what the isolation settings give it, with the real runc.</summary>
public sealed class HardeningFacts(RuncFixture fx) : IClassFixture<RuncFixture>
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);

    private async Task<(ExitResult Exit, string Stdout, string Stderr)> RunAsync(ContainerSpec spec, RuncRuntime? runtime = null)
    {
        var io = fx.Io(spec.Id);
        await using var c = await (runtime ?? fx.Runtime).StartAsync(spec, fx.BundleDir(spec.Id), io, CancellationToken.None);
        var exit = await c.WaitAsync(new CancellationTokenSource(Deadline).Token);
        return (exit, await StoredLog.ReadAllTextAsync(io.StdoutPath, "stdout"), await StoredLog.ReadAllTextAsync(io.StderrPath, "stderr"));
    }

    private ContainerSpec Sh(string script) => fx.Spec(fx.NewId(), "sh", "-c", script);

    [Fact]
    public async Task Seccomp_BlocksUnshareOfAUserNamespace_EvenThoughItNeedsNoCapability()
    {
        // unshare -U needs no capability at all: only the seccomp profile stops it.
        var (exit, stdout, stderr) = await RunAsync(Sh("unshare -U -r id -u; echo rc=$?"));
        Assert.True(exit.Successful, stderr);
        Assert.Contains("rc=1", stdout);
        Assert.Contains("Operation not permitted", stderr);
    }

    [Fact]
    public async Task MountAndUmount_Fail_EvenForRoot()
    {
        var (exit, stdout, stderr) = await RunAsync(Sh(
            "mkdir -p /tmp/m; mount -t tmpfs none /tmp/m; echo mount=$?; umount /proc; echo umount=$?; umount -l /sys; echo lazy=$?; id -u"));
        Assert.True(exit.Successful, stderr);
        Assert.DoesNotContain("mount=0", stdout);
        Assert.DoesNotContain("umount=0", stdout);
        Assert.DoesNotContain("lazy=0", stdout);
        Assert.EndsWith("0\n", stdout); // it ran as root, and root could not
    }

    [Fact]
    public async Task Personality_RefusesAslrOff_ButAllowsTheQuery()
    {
        // linux64 -R (setarch) sets ADDR_NO_RANDOMIZE (0x0040000): not in the allowed list.
        var (exit, stdout, stderr) = await RunAsync(Sh("linux64 -R true; echo norandom=$?; linux64 true; echo plain=$?"));
        Assert.True(exit.Successful, stderr);
        Assert.Contains("norandom=1", stdout);
        Assert.Contains("plain=0", stdout);
    }

    [Fact]
    public async Task KernelPaths_AreMaskedOrReadOnly()
    {
        // Paths that exist on this host (others in the list are skipped by runc when absent).
        // /proc/sysrq-trigger is root's and mode 0200: only the read-only mount stops root from writing it.
        var (exit, stdout, stderr) = await RunAsync(Sh(
            "wc -c < /proc/keys; wc -c < /proc/timer_list; ls /sys/firmware | wc -l; " +
            "echo h 2>/dev/null > /proc/sysrq-trigger && echo SYSRQ || echo sysrq-ro; " +
            "echo 1 2>/dev/null > /proc/sys/kernel/ns_last_pid && echo SYSCTL || echo sysctl-ro"));
        Assert.True(exit.Successful, stderr);
        Assert.Equal(["0", "0", "0", "sysrq-ro", "sysctl-ro"], stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Trim()));
    }

    [Fact]
    public async Task Proc1_IsTheJobsInit_AndHostProcessesAreInvisible()
    {
        var (exit, stdout, stderr) = await RunAsync(Sh("cat /proc/1/cmdline | tr '\\0' ' '; echo; ls /proc | grep -c '^[0-9]'"));
        Assert.True(exit.Successful, stderr);
        var lines = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.StartsWith("sh -c cat /proc/1/cmdline", lines[0]);
        // sh, ls, grep (and maybe cat/tr still exiting): a handful, where the host has hundreds.
        Assert.InRange(int.Parse(lines[1]), 1, 6);
        Assert.True(Directory.GetDirectories("/proc").Count(d => char.IsAsciiDigit(Path.GetFileName(d)[0])) > 20);
    }

    [Fact]
    public async Task RawSockets_Fail_WithoutNetRaw_AndWorkWhenGranted()
    {
        // busybox ping needs a raw socket (or an ICMP datagram socket, which a fresh netns's
        // net.ipv4.ping_group_range "1 0" forbids): without CAP_NET_RAW it cannot even start.
        var (exit, _, stderr) = await RunAsync(Sh("ping -c 1 -W 1 127.0.0.1"));
        Assert.False(exit.Successful);
        Assert.Contains("permission denied", stderr, StringComparison.OrdinalIgnoreCase);

        // Control: the same command works when NET_RAW is granted, so the failure above is the capability's.
        var (granted, stdout, stderr2) = await RunAsync(Sh("ip link set lo up; ping -c 1 -W 1 127.0.0.1") with { Capabilities = ["NET_RAW", "NET_ADMIN"] });
        Assert.True(granted.Successful, stderr2);
        Assert.Contains("1 packets received", stdout);
    }

    [Fact]
    public async Task SetuidBinary_DoesNotGainRoot_UnderNoNewPrivileges()
    {
        var rootfs = BusyboxRootfs.Create(Path.Combine(fx.BaseDir, "suid-rootfs"));
        var suid = Path.Combine(rootfs, "bin", "busybox-suid");
        File.Copy(Path.Combine(rootfs, "bin", "busybox"), suid, overwrite: true);
        File.SetUnixFileMode(suid, (UnixFileMode)0b100_111_101_101); // 4755, owned by root
        Assert.True(File.GetUnixFileMode(suid).HasFlag(UnixFileMode.SetUser));
        var spec = new ContainerSpec { Id = fx.NewId(), RootfsPath = rootfs, Args = ["/bin/busybox-suid", "id", "-u"], Uid = 65534, Gid = 65534, ReadonlyRootfs = true };
        var (exit, stdout, stderr) = await RunAsync(spec);
        Assert.True(exit.Successful, stderr);
        Assert.Equal("65534\n", stdout);
    }

    [Fact]
    public async Task Capabilities_AreGivenToANonRootUser_WhenRequested()
    {
        var spec = Sh("grep CapEff /proc/self/status; nc -l -p 80 -w 1 </dev/null & sleep 0.3; netstat -ltn | grep -c ':80 '")
            with { Uid = 65534, Gid = 65534, Capabilities = ["NET_BIND_SERVICE"] };
        var (exit, stdout, stderr) = await RunAsync(spec);
        Assert.True(exit.Successful, stderr);
        Assert.Contains("CapEff:\t0000000000000400", stdout); // bit 10 = CAP_NET_BIND_SERVICE
        Assert.EndsWith("1\n", stdout);

        var (_, none, _) = await RunAsync(Sh("grep CapEff /proc/self/status") with { Uid = 65534, Gid = 65534 });
        Assert.Contains("CapEff:\t0000000000000000", none);
    }

    [Fact]
    public async Task Ulimits_ShmSize_AndCpuset_AreApplied()
    {
        var spec = Sh("ulimit -n; df -k /dev/shm | tail -1; grep Cpus_allowed_list /proc/self/status")
            with { Rlimits = new Dictionary<string, ulong> { ["RLIMIT_NOFILE"] = 4096 }, ShmSizeBytes = 256L << 20, Cpuset = "0" };
        var (exit, stdout, stderr) = await RunAsync(spec);
        Assert.True(exit.Successful, stderr);
        var lines = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("4096", lines[0]);
        Assert.Equal("262144", lines[1].Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]);
        Assert.EndsWith("\t0", lines[2]);
    }

    [Fact]
    public async Task CpuShares_AreWrittenToTheCgroup()
    {
        var spec = Sh("sleep 30") with { CpuShares = 512 };
        await using var c = await fx.StartAsync(spec);
        var shares = File.ReadAllText($"/sys/fs/cgroup/cpu/batchrunner/{spec.Id}/cpu.shares").Trim();
        Assert.Equal("512", shares);
        await c.KillAsync(CancellationToken.None);
    }

    [Fact]
    public async Task HostLoopbackService_IsUnreachableInNoneMode_AndReachableInHostMode()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        var script = $"echo hello-from-job | nc -w 2 127.0.0.1 {port}; echo rc=$?";

        var (noneExit, noneOut, _) = await RunAsync(Sh(script));
        Assert.True(noneExit.Successful);
        Assert.Contains("rc=1", noneOut);

        var hostRuntime = new RuncRuntime(fx.Runtime.Options with { AllowHostNetwork = true });
        var accept = AcceptLineAsync(listener);
        var (hostExit, hostOut, hostErr) = await RunAsync(Sh(script) with { Network = ContainerNetworkMode.Host }, hostRuntime);
        Assert.True(hostExit.Successful, hostErr);
        Assert.Contains("rc=0", hostOut);
        Assert.Equal("hello-from-job", await accept.WaitAsync(Deadline));
    }

    [Fact]
    public async Task HostNetwork_IsRefused_WhenTheRuntimeDoesNotAllowIt()
    {
        var e = await Assert.ThrowsAsync<ContainerStartException>(() => fx.StartAsync(Sh("true") with { Network = ContainerNetworkMode.Host }));
        Assert.Contains("host network", e.Message);
    }

    private static async Task<string> AcceptLineAsync(TcpListener listener)
    {
        using var client = await listener.AcceptTcpClientAsync();
        using var reader = new StreamReader(client.GetStream());
        return (await reader.ReadLineAsync())!.Trim();
    }
}
