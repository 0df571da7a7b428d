using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;
using System.Text.RegularExpressions;
using BatchRunner.Testing;

namespace BatchRunner.Server.Tests.Service;

/// <summary>
/// scripts/install-service.sh and the batchrunner.service unit it writes, where systemd is not PID 1 (as
/// in CI): the unit passes <c>systemd-analyze verify</c>, and its ExecStart line, run as systemd runs it
/// (<see cref="UnitProcess"/>), says READY=1 only when the API answers, logs with journald priorities, and
/// stops cleanly on SIGTERM; after a crash, ExecStopPost stops the containers the crash left running.
/// Everything is installed under a temp directory (prefix, env file, unit, data), never /etc or /opt.
/// </summary>
[Collection(ServerCollection.Name)]
public sealed partial class ServiceFacts(ServerFixture f) : IAsyncLifetime
{
    // Not CreateTempSubdirectory (mode 0700): the embedded PostgreSQL runs as postgres and must enter it.
    private readonly string _root = Directory.CreateDirectory(Path.Combine("/tmp", "br-service-" + Guid.NewGuid().ToString("N")[..8])).FullName;

    private string Prefix => Path.Combine(_root, "opt", "batchrunner");
    private string ConfigDir => Path.Combine(_root, "etc", "batchrunner");
    private string UnitDir => Path.Combine(_root, "systemd");
    private string DataDir => Path.Combine(_root, "data");
    private string EnvFile => Path.Combine(ConfigDir, "batchrunner.env");
    private string UnitFile => Path.Combine(UnitDir, "batchrunner.service");
    // The service's bridge is the test's own: uninstalling removes that bridge's firewall rules, nobody else's.
    private readonly string _bridge = "brv" + Guid.NewGuid().ToString("N")[..6];

    private Task<string> InstallAsync(params string[] extra) => RepoScript.RunOkAsync("scripts/install-service.sh",
    [
        "--prefix", Prefix, "--config-dir", ConfigDir, "--unit-dir", UnitDir, "--data-dir", DataDir,
        // The tests' build holds the server's (apphost, batchrunner.dll, appsettings.json): no publish needed.
        "--from", AppContext.BaseDirectory, "--no-systemctl", .. TestRegistry.InstallServiceArgs,
        "--env", $"BatchRunner__Isolation__Bridge__Name={_bridge}", .. extra,
    ]);

    [Fact]
    public async Task InstallService_WritesAVerifiedUnit_AndUninstallKeepsTheDataUnlessPurged()
    {
        await InstallAsync();

        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(EnvFile));
        var env = SystemdUnit.ReadEnvironmentFile(EnvFile);
        Assert.Matches("^[0-9a-f]{48}$", env["BATCHRUNNER_API_KEY"]);
        Assert.Equal(DataDir, env["BATCHRUNNER_DATA_DIR"]);

        var (code, stdout, stderr) = await RepoScript.RunAsync("/usr/bin/systemd-analyze", ["verify", UnitFile]);
        Assert.True(code == 0 && stderr.Trim().Length == 0, $"systemd-analyze verify: {code}\n{stdout}\n{stderr}");
        var unit = SystemdUnit.Read(UnitFile);
        Assert.Equal("notify", unit.Value("Type"));
        Assert.Equal("mixed", unit.Value("KillMode"));
        Assert.Equal("on-failure", unit.Value("Restart"));
        // A refused start (StartupFailureFacts: exit status 2) is not retried every RestartSec.
        Assert.Equal("2", unit.Value("RestartPreventExitStatus"));
        Assert.True(int.Parse(unit.Required("LimitNOFILE")) >= 65536);
        Assert.Equal(Path.Combine(Prefix, "batchrunner"), unit.Value("ExecStart"));
        Assert.Equal(EnvFile, unit.Value("EnvironmentFile"));
        // The whole shutdown (grace, the jobs' stop grace, up to 20 s of requeueing, then PostgreSQL) fits in TimeoutStopSec.
        Assert.True(int.Parse(unit.Required("TimeoutStopSec")) > int.Parse(env["BATCHRUNNER_SHUTDOWN_GRACE_SECONDS"]) + 300 + 20);
        Assert.True(File.Exists(Path.Combine(Prefix, "appsettings.json")), "appsettings.json ships beside the executable");

        // A reinstall (an upgrade) keeps the env file and its key; --env changes what it names, and the
        // unit's stop timeout follows a new grace period.
        Directory.CreateDirectory(Path.Combine(DataDir, "jobs"));
        await InstallAsync("--env", "BATCHRUNNER_SHUTDOWN_GRACE_SECONDS=100", "--env", "BATCHRUNNER_MAX_STOP_GRACE_SECONDS=40", "--env", "BATCHRUNNER_ROLE=worker");
        var after = SystemdUnit.ReadEnvironmentFile(EnvFile);
        Assert.Equal(env["BATCHRUNNER_API_KEY"], after["BATCHRUNNER_API_KEY"]);
        Assert.Equal("worker", after["BATCHRUNNER_ROLE"]);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(EnvFile));
        Assert.Equal("200", SystemdUnit.Read(UnitFile).Value("TimeoutStopSec"));

        // The bridge's host firewall rules outlive the service (they are put in place at the first bridge job):
        // uninstalling removes them.
        var firewall = new BatchRunner.Runtime.Network.BridgeFirewall(new() { BridgeName = _bridge });
        await firewall.EnsureAsync([], CancellationToken.None);
        await RepoScript.RunOkAsync("scripts/install-service.sh", "--uninstall", "--prefix", Prefix, "--config-dir", ConfigDir, "--unit-dir", UnitDir, "--no-systemctl");
        var rules = await ExternalCommand.RunAsync("iptables", ["-w", "-S"]);
        await firewall.RemoveAsync(CancellationToken.None); // (only if the assertion below is about to fail)
        Assert.DoesNotContain(firewall.HostChain, rules);
        Assert.False(File.Exists(UnitFile));
        Assert.False(Directory.Exists(Prefix));
        Assert.True(Directory.Exists(Path.Combine(DataDir, "jobs")), "uninstall keeps the data directory");
        Assert.True(File.Exists(EnvFile), "uninstall keeps the settings");

        await RepoScript.RunOkAsync("scripts/install-service.sh", "--uninstall", "--purge", "--prefix", Prefix, "--config-dir", ConfigDir, "--unit-dir", UnitDir, "--no-systemctl");
        Assert.False(Directory.Exists(DataDir));
        Assert.False(File.Exists(EnvFile));
    }

    [Fact]
    public async Task ExecStart_AsSystemdRunsIt_IsReadyWhenTheApiAnswers_StopsCleanly_AndExecStopPostStopsWhatACrashLeft()
    {
        var port = Cluster.TestCluster.FreePort();
        await InstallAsync("--urls", $"http://127.0.0.1:{port}", "--env", "BATCHRUNNER_SHUTDOWN_GRACE_SECONDS=1", "--env", "BATCHRUNNER_STOP_GRACE_SECONDS=1",
            "--env", "BATCHRUNNER_NODE_NAME=svc-" + Guid.NewGuid().ToString("N")[..6], "--env", "BATCHRUNNER_WORKERS=1");
        var unit = SystemdUnit.Read(UnitFile);
        var key = SystemdUnit.ReadEnvironmentFile(EnvFile)["BATCHRUNNER_API_KEY"];
        using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}"), Timeout = TimeSpan.FromSeconds(30) };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", key);
        var log = Path.Combine(_root, "journal.log");
        using var notify = new NotifySocket();
        string id;

        // 1. Start: READY=1 means the API answers now (no polling), with the key from the env file.
        var service = UnitProcess.Start(unit, notify, log);
        await using (service)
        {
            Assert.Equal("READY=1", await ReceiveFromAsync(notify, service, "READY=1"));
            Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("/healthz")).StatusCode);
            Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("/api/v1/jobs")).StatusCode);

            // A job starts under the notify socket (the runtime must not inherit it) and runs past the grace period.
            id = await SubmitAsync(http, "sleep 30");
            await WaitStateAsync(http, id, "running");

            // 2. SIGTERM: STOPPING=1, the job is stopped and requeued after the 1 s grace (and its 1 s stop grace), PostgreSQL stops, exit 0.
            service.Terminate();
            Assert.Equal("STOPPING=1", await ReceiveFromAsync(notify, service, "STOPPING=1"));
            Assert.Equal(0, await service.WaitForExitAsync(TimeSpan.FromSeconds(int.Parse(unit.Required("TimeoutStopSec")))));
            // No PostgreSQL process is left for systemd's SIGKILL of the rest (only the watchdog, about to notice).
            Assert.DoesNotContain(service.CgroupPids(), pid => Comm(pid) is "postgres" or "postmaster");
            Assert.False(File.Exists(Path.Combine(DataDir, "postgres", "postmaster.pid")), "the embedded PostgreSQL stopped");
            Assert.True(File.Exists(Path.Combine(DataDir, "postgres", "PG_VERSION")), "the data directory is intact");
            Assert.Empty(await RuntimeListAsync());
        }

        // Journald priorities: every line the service wrote starts with one; one Information line per request.
        // journald splits the stream at "\n" only; any other control character would make an entry a blob.
        var lines = File.ReadAllText(log).Split('\n', StringSplitOptions.RemoveEmptyEntries).ToList();
        Assert.All(lines, l => Assert.Matches(@"^<[0-7]>[^\x00-\x1f]*$", l));
        // The client sends its key with every request: /healthz needs none, but the line says whose it was.
        Assert.Contains(lines, l => Regex.IsMatch(l, @"^<6>BatchRunner\.Requests\[1\] HTTP GET /healthz 200 in [0-9.]+ ms, key bootstrap$"));
        Assert.Contains(lines, l => Regex.IsMatch(l, @"^<6>BatchRunner\.Requests\[1\] HTTP GET /api/v1/jobs/\{id\} 200 in [0-9.]+ ms, key bootstrap$"));
        Assert.DoesNotContain(lines, l => l.Contains("Microsoft.AspNetCore", StringComparison.Ordinal));

        // 3. As after `systemctl restart`: the requeued job runs again. Then a crash: the main process and every
        // process of the unit's cgroup get SIGKILL (the watchdog too). The job's container lives in its own
        // cgroup and survives; ExecStopPost, which systemd runs next, kills it.
        var second = UnitProcess.Start(unit, notify, log);
        await using (second)
        {
            Assert.Equal("READY=1", await ReceiveFromAsync(notify, second, "READY=1 after the restart"));
            var requeued = await Poll.UntilAsync(() => GetJobAsync(http, id), j => j.GetProperty("state").GetString() == "running"
                && j.GetProperty("attempt").GetInt32() == 2, TimeSpan.FromSeconds(30), "the requeued job running again", 100);
            Assert.Equal("requeued", requeued.GetProperty("attempts")[0].GetProperty("reason").GetString());
            await second.KillCgroupAsync();
        }
        var left = await RuntimeListAsync();
        Assert.Contains(left, c => c.Status == "running");

        var stopPost = await RepoScript.RunAsync(unit.Required("ExecStopPost"), [], unit.ServiceEnvironment());
        Assert.True(stopPost.ExitCode == 0, stopPost.Stderr);
        Assert.Contains("killed container", stopPost.Stdout);
        await Poll.UntilAsync(async () => await RuntimeListAsync(), l => l.All(c => c.Status == "stopped"), TimeSpan.FromSeconds(10), "the container stopped", 100);

        // (The next start's janitor removing the leftovers is ClusterFacts' KilledWorker test; this test's
        // DisposeAsync removes them.)
    }

    private async Task<string> SubmitAsync(HttpClient http, string script)
    {
        var r = await http.PostAsJsonAsync("/api/v1/jobs", new { image = f.Busybox, command = new[] { "/bin/sh", "-c", script }, resources = new { cpus = 0.1, memory = "16Mi" } });
        var body = await r.Content.ReadAsStringAsync();
        Assert.True(r.StatusCode == HttpStatusCode.Created, body);
        return JsonDocument.Parse(body).RootElement.GetProperty("id").GetString()!;
    }

    private static async Task<JsonElement> GetJobAsync(HttpClient http, string id) =>
        JsonDocument.Parse(await http.GetStringAsync($"/api/v1/jobs/{id}")).RootElement.Clone();

    private static Task<JsonElement> WaitStateAsync(HttpClient http, string id, string state) =>
        Poll.UntilAsync(() => GetJobAsync(http, id), j => j.GetProperty("state").GetString() == state, TimeSpan.FromSeconds(30), $"job {id} {state}", 100);

    /// <summary>The next notify message, failing early (with the service's log) if the service exits first.</summary>
    private static async Task<string> ReceiveFromAsync(NotifySocket notify, UnitProcess service, string what)
    {
        var receive = notify.ReceiveAsync(TimeSpan.FromSeconds(90), what);
        var exited = Poll.UntilAsync(() => service.HasExited, TimeSpan.FromSeconds(95), "exit", 100);
        if (await Task.WhenAny(receive, exited) == receive || receive.IsCompleted) return await receive;
        throw new Xunit.Sdk.XunitException($"the service exited ({service.ExitCode}) before {what}:\n{service.Log()}");
    }

    private static string Comm(int pid)
    {
        try { return File.ReadAllText($"/proc/{pid}/comm").Trim(); }
        catch (IOException) { return ""; }
    }

    private sealed record Container(string Id, string Status);

    /// <summary>The containers in the data directory's runtime state root (runc list).</summary>
    private async Task<IReadOnlyList<Container>> RuntimeListAsync()
    {
        var state = Path.Combine(DataDir, "state", "runc");
        if (!Directory.Exists(state)) return [];
        var json = await ExternalCommand.RunAsync("runc", ["--root", state, "list", "--format", "json"]);
        if (string.IsNullOrWhiteSpace(json) || json.Trim() == "null") return [];
        return JsonDocument.Parse(json).RootElement.EnumerateArray()
            .Select(c => new Container(c.GetProperty("id").GetString()!, c.GetProperty("status").GetString()!)).ToList();
    }

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        // Whatever a failed test left: containers first, then mounts, then the files.
        var state = Path.Combine(DataDir, "state", "runc");
        if (Directory.Exists(state))
            foreach (var c in await RuntimeListAsync())
                await ExternalCommand.RunAsync("runc", ["--root", state, "delete", "--force", c.Id]);
        BatchRunner.Oci.Snapshots.MountCleanup.UnmountAllUnder(_root);
        var pgData = Path.Combine(DataDir, "postgres");
        if (File.Exists(Path.Combine(pgData, "postmaster.pid")) && BatchRunner.Server.Storage.EmbeddedPostgres.FindServerBinaries() is { } bin)
            await RepoScript.RunAsync("/usr/sbin/runuser", ["-u", "postgres", "--", Path.Combine(bin, "pg_ctl"), "-D", pgData, "-m", "immediate", "-w", "stop"]);
        Directory.Delete(_root, recursive: true);
    }
}
