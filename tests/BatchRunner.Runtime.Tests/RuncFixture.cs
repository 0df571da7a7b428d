using BatchRunner.Runtime;
using BatchRunner.Runtime.Cgroups;
using BatchRunner.Testing;

namespace BatchRunner.Runtime.Tests;

/// <summary>
/// One busybox rootfs and one runc runtime (own --root) per test class. Container ids are
/// "br-test-&lt;fixture&gt;-&lt;n&gt;", so cleanup at the end only touches this fixture's containers even
/// when other test runs share the host.
/// </summary>
public sealed class RuncFixture : IAsyncLifetime
{
    public const string TestsRoot = "/tmp/batchrunner-runtime-tests";
    public const string StateRoot = "/run/batchrunner-runtime-tests/runc";

    private int _next;

    public string Prefix { get; } = "br-test-" + Guid.NewGuid().ToString("N")[..8] + "-";
    public string BaseDir { get; }
    public string Rootfs { get; }
    public RuncRuntime Runtime { get; }

    public RuncFixture()
    {
        BaseDir = Path.Combine(TestsRoot, Prefix.TrimEnd('-'));
        Rootfs = BusyboxRootfs.Create(Path.Combine(BaseDir, "rootfs"));
        Runtime = new RuncRuntime(new RuncRuntimeOptions { BinaryPath = "/usr/sbin/runc", StateRoot = StateRoot });
    }

    public string NewId() => Prefix + Interlocked.Increment(ref _next);

    public ContainerSpec Spec(string id, params string[] args) =>
        new() { Id = id, RootfsPath = Rootfs, Args = args, ReadonlyRootfs = true };

    public string BundleDir(string id) => Path.Combine(BaseDir, "bundles", id);

    /// <summary>An executable /bin/sh script in <see cref="BaseDir"/> that stands in for runc: <paramref name="body"/>
    /// then `exec /usr/sbin/runc "$@"`.</summary>
    public string RuncWrapper(string name, string body)
    {
        var path = Path.Combine(BaseDir, name);
        File.WriteAllText(path, $"#!/bin/sh\n{body}\nexec /usr/sbin/runc \"$@\"\n");
        File.SetUnixFileMode(path, (UnixFileMode)0b111_101_101);
        return path;
    }

    public ContainerIo Io(string id)
    {
        var dir = Path.Combine(BaseDir, "io");
        Directory.CreateDirectory(dir);
        return new ContainerIo(Path.Combine(dir, id + ".out"), Path.Combine(dir, id + ".err"));
    }

    public Task<IRunningContainer> StartAsync(ContainerSpec spec) =>
        Runtime.StartAsync(spec, BundleDir(spec.Id), Io(spec.Id), CancellationToken.None);

    public string MemoryCgroupDir(string id) => new CgroupV1Reader(CgroupVersionDetector.DefaultRoot, "/batchrunner/" + id).ControllerDir("memory");

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        // Whatever a failed test left behind: containers, cgroups, then our directories.
        await Runtime.CleanupOrphansAsync(Prefix, CancellationToken.None);
        Directory.Delete(BaseDir, recursive: true);
    }
}
