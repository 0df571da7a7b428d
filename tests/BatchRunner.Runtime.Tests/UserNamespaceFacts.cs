using BatchRunner.Runtime.Logs;
using BatchRunner.Runtime;
using BatchRunner.Testing;

namespace BatchRunner.Runtime.Tests;

/// <summary>User-namespace remapping with the real runc: the container's root is an unprivileged host uid.</summary>
public sealed class UserNamespaceFacts(RuncFixture fx) : IClassFixture<RuncFixture>
{
    private const uint HostStart = 231_072;

    [Fact]
    public async Task ContainerRoot_IsAnUnprivilegedHostUser_AndWritesOutputsAsIt()
    {
        // A rootfs of its own: the runtime hands its root directory to the mapped root.
        var rootfs = BusyboxRootfs.Create(Path.Combine(fx.BaseDir, "userns-rootfs-" + Guid.NewGuid().ToString("N")[..6]));
        var outputs = Directory.CreateDirectory(Path.Combine(fx.BaseDir, "userns-out-" + Guid.NewGuid().ToString("N")[..6])).FullName;
        var runtime = new RuncRuntime(fx.Runtime.Options with { UserNamespace = new UserNamespaceOptions(HostStart, HostStart, 65536) });
        var spec = new ContainerSpec
        {
            Id = fx.NewId(),
            RootfsPath = rootfs,
            ReadonlyRootfs = true,
            Args = ["sh", "-c", "id -u; cat /proc/self/uid_map; echo data > /outputs/by-root; stat -c %u /bin/busybox; sleep 30"],
            Mounts = [new BindMount(outputs, "/outputs", ReadOnly: false)],
        };
        var io = fx.Io(spec.Id);
        await using var c = await runtime.StartAsync(spec, fx.BundleDir(spec.Id), io, CancellationToken.None);
        var stdout = await Poll.UntilAsync(() => StoredLog.ReadAllTextAsync(io.StdoutPath, "stdout"),
            s => s.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length >= 3, TimeSpan.FromSeconds(30), "job output");
        var lines = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("0", lines[0]);
        Assert.Equal(["0", HostStart.ToString(), "65536"], lines[1].Split(' ', StringSplitOptions.RemoveEmptyEntries));
        // Image files owned by host root are unmapped inside: they show as the overflow id, not as root.
        Assert.Equal("65534", lines[2]);

        // Seen from the host, the job's processes and files belong to the mapped uid, not to root.
        var status = File.ReadAllLines($"/sys/fs/cgroup/pids/batchrunner/{spec.Id}/cgroup.procs")
            .Select(p => File.ReadAllLines($"/proc/{p}/status").First(l => l.StartsWith("Uid:"))).ToList();
        Assert.All(status, s => Assert.Equal(HostStart.ToString(), s.Split('\t', StringSplitOptions.RemoveEmptyEntries)[1]));
        var file = Path.Combine(outputs, "by-root");
        Assert.Equal("data\n", File.ReadAllText(file));
        Assert.Equal(HostStart, StatUid(file));
        await c.KillAsync(CancellationToken.None);
    }

    [Fact]
    public async Task SupplementaryGroupOutsideTheRange_IsRefused_NamingIt()
    {
        // An image's /etc/group can add its user to any gid; runc alone reports only "setgroups: invalid argument".
        var runtime = new RuncRuntime(fx.Runtime.Options with { UserNamespace = new UserNamespaceOptions(HostStart, HostStart, 65536) });
        var spec = new ContainerSpec { Id = fx.NewId(), RootfsPath = fx.Rootfs, Uid = 1000, Gid = 1000, AdditionalGids = [70_000], Args = ["id"] };

        var e = await Assert.ThrowsAsync<ContainerStartException>(() => runtime.StartAsync(spec, fx.BundleDir(spec.Id), fx.Io(spec.Id), CancellationToken.None));

        Assert.Equal($"container {spec.Id}: supplementary group 70000 of user 1000 lies outside the node's user namespace of 65536 ids", e.Message);
        Assert.False(File.Exists(Path.Combine(fx.BundleDir(spec.Id), "config.json")));
    }

    private static uint StatUid(string path)
    {
        var r = ExternalCommand.RunAsync("stat", ["-c", "%u", path]).GetAwaiter().GetResult();
        return uint.Parse(r.Trim());
    }
}
