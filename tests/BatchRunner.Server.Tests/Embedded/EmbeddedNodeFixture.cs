using System.Diagnostics;
using BatchRunner.Runtime;
using System.Net;
using System.Text.Json;
using BatchRunner.Server.Storage.Embedded;
using BatchRunner.Server.Tests.Cluster;
using BatchRunner.Testing;

namespace BatchRunner.Server.Tests.Embedded;

/// <summary>
/// One real BatchRunner process (API + worker) on its own embedded PostgreSQL, as a single machine runs
/// it: the database these tests kill belongs to this process alone (the in-process ServerFixture's is
/// shared by many tests). Heartbeats every second, so that an outage of two seconds would fence the node
/// under the plain fencing rule.
/// </summary>
public sealed class EmbeddedNodeFixture : IAsyncLifetime
{
    public TestCluster Cluster { get; private set; } = null!;
    public NodeProcess Node { get; private set; } = null!;
    public string PgData => Path.Combine(Node.DataDir, "postgres");

    public async Task InitializeAsync()
    {
        Cluster = await TestCluster.StartAsync(sharedDatabase: false);
        Node = await Cluster.StartNodeAsync("solo", role: "all", cpus: 2, workers: 4);
    }

    public async Task DisposeAsync() => await Cluster.DisposeAsync();

    /// <summary>The pid in postmaster.pid (0 when there is none).</summary>
    public int PostmasterPid() => PostmasterPidFile.ReadPid(Path.Combine(PgData, PostmasterPidFile.DataDirLock)) ?? 0;

    /// <summary>kill -9 of the postmaster, as the OOM killer or an operator's mistake would; returns its pid.</summary>
    public int KillPostmaster()
    {
        var pid = PostmasterPid();
        Assert.True(PostgresProcesses.RunsIn(pid, PgData), $"postmaster {pid} runs in {PgData}");
        Assert.True(HostProcesses.Signal(pid, HostProcesses.SIGKILL), $"kill -9 {pid}");
        return pid;
    }

    /// <summary>
    /// Polls an API call that needs the database until it answers 200 from a postmaster other than
    /// <paramref name="killed"/>: for a few milliseconds after the kill, backends of the dead postmaster may
    /// still answer on connections they had. Returns when the API answered.
    /// </summary>
    public async Task<TimeSpan> WaitApiBackAsync(int killed, Stopwatch since, TimeSpan timeout)
    {
        await Poll.UntilAsync(async () =>
        {
            var pid = PostmasterPid();
            if (pid == killed || !PostgresProcesses.RunsIn(pid, PgData)) return HttpStatusCode.ServiceUnavailable;
            try { return (await Cluster.Api.Http.GetAsync("/api/v1/jobs?limit=1")).StatusCode; }
            catch (HttpRequestException) { return HttpStatusCode.BadGateway; }
        }, s => s == HttpStatusCode.OK, timeout, "the API to answer 200 again", 20);
        return since.Elapsed;
    }

    /// <summary>/healthz's "embedded" object (it is there with a 503 too, while the database is down).</summary>
    public async Task<JsonElement> EmbeddedHealthAsync()
    {
        using var http = new HttpClient();
        var body = await (await http.GetAsync($"{Node.Url}/healthz")).Content.ReadAsStringAsync();
        return JsonDocument.Parse(body).RootElement.GetProperty("embedded").Clone();
    }

    /// <summary>Each test starts on a running database, whatever the previous one left.</summary>
    public Task<JsonElement> WaitHealthyAsync() =>
        Poll.UntilAsync(EmbeddedHealthAsync, h => h.GetProperty("state").GetString() == "running", TimeSpan.FromSeconds(60), "the embedded PostgreSQL running", 50);

    /// <summary>The host directory of the running job's /outputs (tests signal the job through it): on its attempt's
    /// job disk (DATA/run/CONTAINER-ID/disk/outputs), or in its run directory when disks are not enforced.</summary>
    public string OutputsOf(string jobId)
    {
        var run = Directory.GetDirectories(Path.Combine(Node.DataDir, "run"), $"*{Guid.Parse(jobId):N}-*").Single();
        var onDisk = Path.Combine(run, "disk", "outputs");
        return Directory.Exists(onDisk) ? onDisk : Path.Combine(run, "outputs");
    }

    /// <summary>Whether the job wrote /outputs/<paramref name="name"/>: still on its disk, or moved to its directory once it exited.</summary>
    public static bool WroteOutput(string outputs, string jobDir, string name) =>
        File.Exists(Path.Combine(outputs, name)) || File.Exists(Path.Combine(jobDir, "outputs", name));

    public string JobDirOf(string jobId) => Path.Combine(Node.DataDir, "jobs", Guid.Parse(jobId).ToString("N"));
}
