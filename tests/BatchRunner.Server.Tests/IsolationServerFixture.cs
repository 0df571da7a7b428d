using BatchRunner.Server.Hosting;
using BatchRunner.Testing;
using Microsoft.AspNetCore.Builder;

namespace BatchRunner.Server.Tests;

/// <summary>
/// A BatchRunner whose node allows every network mode (host included), with a bridge of its own
/// (own name, a /24 in 10.0.0.0/8, own state dir, no NAT: nothing in these tests leaves the host),
/// a dataset "testdata" and small input limits. Separate data dir and embedded PostgreSQL.
/// </summary>
public sealed class IsolationServerFixture : IAsyncLifetime
{
    public const string ApiKey = "iso-key-5b2e";
    public const long MaxInputBytes = 4L << 20;
    public const string DatasetFile = "labels.txt";
    public const string DatasetContent = "cat\ndog\n";

    private readonly string _tag = Guid.NewGuid().ToString("N")[..6];
    public WebApplication App { get; private set; } = null!;
    public BatchRunnerClient Api { get; private set; } = null!;
    public HttpClient Client => Api.Http;
    public string DataDir { get; }
    public string DatasetDir { get; }
    public string BridgeName => "brs" + _tag;
    public string BridgeState => "/run/batchrunner-server-tests/cni-" + _tag;
    public string Subnet { get; } = $"10.{Random.Shared.Next(100, 250)}.{Random.Shared.Next(0, 255)}.0/24";
    public TestRegistry Registry { get; private set; } = null!;
    public string Busybox { get; private set; } = null!;

    public IsolationServerFixture()
    {
        DataDir = Path.Combine("/tmp", "br-iso-tests-" + _tag);
        DatasetDir = Path.Combine("/tmp", "br-iso-dataset-" + _tag);
    }

    public async Task InitializeAsync()
    {
        Directory.CreateDirectory(DatasetDir);
        await File.WriteAllTextAsync(Path.Combine(DatasetDir, DatasetFile), DatasetContent);
        Registry = await TestRegistry.StartAsync();
        Busybox = await TestImages.PushBusyboxAsync(Registry);
        App = await BatchRunnerApp.BuildAsync([
            "--urls", "http://127.0.0.1:0",
            $"--BatchRunner:DataDir={DataDir}",
            .. TestRegistry.ServerArgs,
            $"--BatchRunner:ApiKey={ApiKey}",
            $"--BatchRunner:NodeName=iso-{_tag}",
            "--BatchRunner:Workers=4",
            "--BatchRunner:Isolation:AllowedNetworkModes:0=none",
            "--BatchRunner:Isolation:AllowedNetworkModes:1=host",
            "--BatchRunner:Isolation:AllowedNetworkModes:2=bridge",
            $"--BatchRunner:Isolation:Bridge:Name={BridgeName}",
            $"--BatchRunner:Isolation:Bridge:Network=brs-{_tag}",
            $"--BatchRunner:Isolation:Bridge:Subnet={Subnet}",
            $"--BatchRunner:Isolation:Bridge:StateDir={BridgeState}",
            "--BatchRunner:Isolation:Bridge:IpMasq=false",
            $"--BatchRunner:Isolation:Datasets:testdata={DatasetDir}",
            $"--BatchRunner:Isolation:MaxInputBytes={MaxInputBytes}",
            "--BatchRunner:Isolation:MaxInputEntries=100",
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
        // The bridge's host rules outlive the server by design (other processes may share a bridge): the test's own go here.
        await new BatchRunner.Runtime.Network.BridgeFirewall(new() { BridgeName = BridgeName }).RemoveAsync(CancellationToken.None);
        try { await ExternalCommand.RunAsync("ip", ["link", "delete", BridgeName]); } catch (InvalidOperationException) { }
        foreach (var d in new[] { DataDir, DatasetDir, BridgeState })
            try { if (Directory.Exists(d)) Directory.Delete(d, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}

/// <remarks>
/// Not run in parallel with other collections: each of these collections starts a server of its own whose
/// workers run real containers, and side by side with the shared server they slow the timing-bound tests
/// (cancel within seconds, timeouts) on a 2-core machine. (Hangfire's process-wide statics are no reason:
/// every host has its own job storage, job activator and log target.)
/// </remarks>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class IsolationServerCollection : ICollectionFixture<IsolationServerFixture>
{
    public const string Name = "isolation-server";
}
