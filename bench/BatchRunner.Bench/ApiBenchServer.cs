using BatchRunner.Server.Hosting;
using BatchRunner.Server.Storage;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;

namespace BatchRunner.Bench;

/// <summary>
/// A BatchRunner server in role "api" (nothing consumes the queue) on its own data directory under
/// /var/tmp/batchrunner-bench/, with a node record of ample capacity registered and heartbeated by the benchmark
/// itself, as a worker would, so admission accepts jobs. Disposing stops it and removes the directory.
/// </summary>
public sealed class ApiBenchServer : IAsyncDisposable
{
    public const string Key = "bench-key";

    private readonly string _dir;
    private readonly Timer _beat;

    public WebApplication App { get; }
    public Uri Address { get; }

    /// <summary>The embedded cluster's data directory (its postmaster.pid names the cluster's processes).</summary>
    public string PostgresDataDir => Path.Combine(_dir, "postgres");

    private ApiBenchServer(WebApplication app, string dir, Timer beat, Uri address) => (App, _dir, _beat, Address) = (app, dir, beat, address);

    public static async Task<ApiBenchServer> StartAsync(string name, params string[] extraArgs)
    {
        var dir = Path.Combine("/var/tmp", "batchrunner-bench", name + "-" + Guid.NewGuid().ToString("N")[..8]);
        var app = await BatchRunnerApp.BuildAsync([
            "--urls", "http://127.0.0.1:0", $"--BatchRunner:DataDir={dir}", $"--BatchRunner:ApiKey={Key}",
            "--BatchRunner:Role=api", "--Logging:LogLevel:Default=Warning",
            // The shipped request line (one per request) would flood the bench's output; what it costs is measured by
            // `logcost`. The per-key rate limits (429 past 200 requests/s for an admin key) are raised so that they never
            // answer in place of the server being measured.
            "--Logging:LogLevel:BatchRunner.Requests=Warning",
            "--BatchRunner:Auth:RateLimits:admin:PermitsPerSecond=1000000", "--BatchRunner:Auth:RateLimits:admin:Burst=1000000", .. extraArgs,
        ]);
        await app.StartAsync();
        var nodes = app.Services.GetRequiredService<NodeStore>();
        var instance = Guid.NewGuid();
        await nodes.RegisterAsync("bench-node", instance, new Dictionary<string, string>(), new NodeCapacity(1024, 1L << 42, 0), ["default"], TimeSpan.FromMinutes(10), default);
        // A heartbeat that fails (the database saturated by the load being measured) is tried again at the next tick; thrown
        // from the timer's thread it ended the whole bench (2026-11-30: connection opens timed out at full load on a slow VM).
        var beat = new Timer(_ =>
        {
            try { nodes.HeartbeatAsync("bench-node", instance, default).Wait(); }
            catch (AggregateException e) { Console.Error.WriteLine($"bench node heartbeat failed: {e.InnerException?.Message}"); }
        }, null, TimeSpan.FromSeconds(30), TimeSpan.FromSeconds(30));
        var address = new Uri(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First());
        return new ApiBenchServer(app, dir, beat, address);
    }

    public async ValueTask DisposeAsync()
    {
        await _beat.DisposeAsync();
        await App.StopAsync();
        await App.DisposeAsync();
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }
}
