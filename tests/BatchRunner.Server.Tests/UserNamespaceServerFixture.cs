using BatchRunner.Server.Hosting;
using BatchRunner.Testing;
using Microsoft.AspNetCore.Builder;

namespace BatchRunner.Server.Tests;

/// <summary>
/// A BatchRunner whose node remaps every job into the host id range <see cref="HostIdStart"/> ..
/// +<see cref="Size"/> (BatchRunner:Isolation:UserNamespace), with a dataset holding a file only host
/// root may read. Own data dir, embedded PostgreSQL and registry (busybox, and busybox whose config
/// names nobody); network modes none and host. Kept small: it is one more server start in the suite.
/// </summary>
public sealed class UserNamespaceServerFixture : IAsyncLifetime
{
    public const string ApiKey = "userns-key-41c9";
    public const uint HostIdStart = 200_000;
    public const uint Size = 65_536;
    public const string SecretFile = "host-root-only.txt";
    public const string SecretContent = "host root's secret\n";

    private readonly string _tag = Guid.NewGuid().ToString("N")[..6];
    public WebApplication App { get; private set; } = null!;
    public BatchRunnerClient Api { get; private set; } = null!;
    public HttpClient Client => Api.Http;
    public string NodeName => "userns-" + _tag;
    public string DataDir { get; }
    /// <summary>Dataset "hostonly": <see cref="SecretFile"/>, owned by host root, mode 0600.</summary>
    public string DatasetDir { get; }
    public TestRegistry Registry { get; private set; } = null!;
    public string Busybox { get; private set; } = null!;
    /// <summary>Busybox whose image config says User <see cref="TestImages.NobodyUser"/>.</summary>
    public string Nobody { get; private set; } = null!;

    public UserNamespaceServerFixture()
    {
        DataDir = Path.Combine("/tmp", "br-userns-tests-" + _tag);
        DatasetDir = Path.Combine("/tmp", "br-userns-dataset-" + _tag);
    }

    public async Task InitializeAsync()
    {
        Directory.CreateDirectory(DatasetDir);
        var secret = Path.Combine(DatasetDir, SecretFile);
        await File.WriteAllTextAsync(secret, SecretContent);
        if (OperatingSystem.IsLinux()) File.SetUnixFileMode(secret, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        Registry = await TestRegistry.StartAsync();
        Busybox = await TestImages.PushBusyboxAsync(Registry);
        Nobody = await TestImages.PushNobodyAsync(Registry);
        App = await BatchRunnerApp.BuildAsync([
            "--urls", "http://127.0.0.1:0",
            $"--BatchRunner:DataDir={DataDir}",
            .. TestRegistry.ServerArgs,
            $"--BatchRunner:ApiKey={ApiKey}",
            $"--BatchRunner:NodeName={NodeName}",
            "--BatchRunner:Workers=2",
            "--BatchRunner:Isolation:AllowedNetworkModes:0=none",
            "--BatchRunner:Isolation:AllowedNetworkModes:1=host",
            "--BatchRunner:Isolation:UserNamespace:Enabled=true",
            $"--BatchRunner:Isolation:UserNamespace:HostUidStart={HostIdStart}",
            $"--BatchRunner:Isolation:UserNamespace:HostGidStart={HostIdStart}",
            $"--BatchRunner:Isolation:UserNamespace:Size={Size}",
            $"--BatchRunner:Isolation:Datasets:hostonly={DatasetDir}",
            "--Logging:LogLevel:Default=Warning",
            "--Logging:LogLevel:BatchRunner=Information",
        ]);
        (Api, _) = await InProcessHost.StartAsync(App, ApiKey);
    }

    public async Task DisposeAsync()
    {
        Api?.Dispose();
        await InProcessHost.StopAsync(App);
        if (Registry is not null) await Registry.DisposeAsync();
        foreach (var d in new[] { DataDir, DatasetDir })
            try { if (Directory.Exists(d)) Directory.Delete(d, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    /// <summary>The host pids in the cgroup of attempt 1 of job <paramref name="id"/> (cgroup v1 pids hierarchy, or v2).</summary>
    public IReadOnlyList<int> HostPidsOf(string id)
    {
        var containerId = Nodes.NodeIdentity.For(NodeName, DataDir).ContainerId(Guid.Parse(id), 1);
        var cgroup = Runtime.Spec.SpecBuilder.CgroupsPathFor(containerId).TrimStart('/');
        var procs = new[] { "/sys/fs/cgroup/pids", "/sys/fs/cgroup" }.Select(root => Path.Combine(root, cgroup, "cgroup.procs")).FirstOrDefault(File.Exists);
        return procs is null ? [] : File.ReadAllLines(procs).Where(l => l.Length > 0).Select(int.Parse).ToList();
    }
}

/// <remarks>Not parallel with other collections: one more server running real containers (see <see cref="IsolationServerCollection"/>).</remarks>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class UserNamespaceServerCollection : ICollectionFixture<UserNamespaceServerFixture>
{
    public const string Name = "userns-server";
}
