using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;
using BatchRunner.Server.Tests.Service;
using BatchRunner.Testing;
using Npgsql;

namespace BatchRunner.Server.Tests.Cluster;

/// <summary>
/// README "Several machines", step by step as written, on one machine: a PostgreSQL server set up as
/// Debian's is, scripts/init-database.sh creating the role and database, then scripts/install-service.sh
/// with the README's --env settings for an api node and two workers, each in its own prefix and data
/// directory, each started as systemd starts the unit. Differences from the README, because the three
/// "machines" share one host: loopback ports instead of addresses (the server's own pg_hba.conf already
/// lets 127.0.0.1 in with scram-sha-256, as the README's added line does for the nodes' network),
/// BATCHRUNNER_NODE_NAME set (the host name is the default), a 1 s heartbeat to keep the test short, and
/// a label per worker.
/// </summary>
[Collection(ClusterCollection.Name)]
public sealed class SeveralMachinesFacts : IAsyncLifetime
{
    private readonly string _root = Directory.CreateDirectory(Path.Combine("/tmp", "br-machines-" + Guid.NewGuid().ToString("N")[..8])).FullName;
    private readonly List<Machine> _machines = [];
    private SystemPostgres? _db;
    private TestRegistry? _registry;

    private sealed record Machine(string Name, string Url, string Root, SystemdUnit Unit, UnitProcess Process, NotifySocket Notify)
    {
        public string DataDir => Path.Combine(Root, "data");
    }

    [Fact]
    public async Task ReadmeSteps_RunAnApiNodeAndTwoWorkersOnOnePostgres_AndAJobOfADeadNodeSaysSo()
    {
        _registry = await TestRegistry.StartAsync();
        var busybox = await TestImages.PushBusyboxAsync(_registry);

        // 1. The database machine: PostgreSQL, then the role and database; the script prints the connection string.
        _db = await SystemPostgres.StartAsync(Path.Combine(_root, "db"));
        var init = await RepoScript.RunAsync("scripts/init-database.sh", ["--host", "127.0.0.1", "--port", _db.Port.ToString()],
            new Dictionary<string, string> { ["PATH"] = Environment.GetEnvironmentVariable("PATH")!, ["PGHOST"] = _db.SocketDir, ["PGPORT"] = _db.Port.ToString() });
        Assert.True(init.ExitCode == 0, init.Stderr);
        var connectionString = init.Stdout.Trim();
        Assert.Matches($"^Host=127.0.0.1;Port={_db.Port};Database=batchrunner;Username=batchrunner;Password=[0-9a-f]{{48}}$", connectionString);
        await using (var conn = new NpgsqlConnection(connectionString))
        {
            await conn.OpenAsync();
            await using var cmd = new NpgsqlCommand("select rolsuper or rolcreatedb or rolcreaterole from pg_roles where rolname = current_user", conn);
            Assert.False((bool)(await cmd.ExecuteScalarAsync())!, "the role is an ordinary one");
        }

        // 2. and 3. The api machine and two workers; the first to start applies the migrations as that role.
        var machines = await Task.WhenAll(
            InstallAndStartAsync("api", "api", connectionString),
            InstallAndStartAsync("w1", "worker", connectionString),
            InstallAndStartAsync("w2", "worker", connectionString));
        var (api, w1) = (machines[0], machines[1]);
        var key = SystemdUnit.ReadEnvironmentFile(Path.Combine(api.Root, "etc", "batchrunner.env"))["BATCHRUNNER_API_KEY"];
        using var http = new HttpClient { BaseAddress = new Uri(api.Url), Timeout = TimeSpan.FromSeconds(30) };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", key);

        var nodes = await Poll.UntilAsync(async () => JsonDocument.Parse(await http.GetStringAsync("/api/v1/nodes")).RootElement.Clone(),
            n => n.GetArrayLength() == 2, TimeSpan.FromSeconds(20), "both workers listed", 100);
        Assert.Equal(["w1", "w2"], nodes.EnumerateArray().Select(n => n.GetProperty("name").GetString()).Order());

        // Each worker runs a job; its log is served through the api node (advertised URL, cluster token).
        foreach (var worker in new[] { "w1", "w2" })
        {
            var id = await SubmitAsync(http, new { image = busybox, command = new[] { "echo", "hello from " + worker }, nodeSelector = new { machine = worker } });
            var done = await Poll.UntilAsync(() => GetJobAsync(http, id), j => j.GetProperty("state").GetString() is "succeeded" or "failed",
                TimeSpan.FromSeconds(60), $"job on {worker}", 100);
            Assert.Equal("succeeded", done.GetProperty("state").GetString());
            Assert.Equal(worker, done.GetProperty("node").GetString());
            Assert.True(done.GetProperty("nodeAlive").GetBoolean());
            Assert.Equal($"hello from {worker}\n", await http.GetStringAsync($"/api/v1/jobs/{id}/logs"));
        }

        // A job whose worker dies says so at once, while it still shows its last state.
        var running = await SubmitAsync(http, new { image = busybox, command = new[] { "sleep", "60" }, nodeSelector = new { machine = "w1" } });
        var before = await Poll.UntilAsync(() => GetJobAsync(http, running), j => j.GetProperty("state").GetString() == "running",
            TimeSpan.FromSeconds(60), "the long job running on w1", 100);
        Assert.True(before.GetProperty("nodeAlive").GetBoolean());
        w1.Process.KillMain();
        var after = await Poll.UntilAsync(() => GetJobAsync(http, running), j => j.GetProperty("nodeAlive").GetBoolean() == false,
            TimeSpan.FromSeconds(20), "nodeAlive false", 100);
        Assert.Equal("w1", after.GetProperty("node").GetString());
        Assert.Contains(after.GetProperty("state").GetString(), new[] { "running", "queued" });
        var listed = JsonDocument.Parse(await http.GetStringAsync("/api/v1/jobs?limit=10")).RootElement.GetProperty("items").EnumerateArray()
            .Single(j => j.GetProperty("id").GetString() == running);
        Assert.False(listed.GetProperty("nodeAlive").GetBoolean());
        Assert.Equal(HttpStatusCode.Accepted, (await http.PostAsync($"/api/v1/jobs/{running}/cancel", null)).StatusCode);
    }

    private async Task<Machine> InstallAndStartAsync(string name, string role, string connectionString)
    {
        var root = Path.Combine(_root, name);
        var port = TestCluster.FreePort();
        var url = $"http://127.0.0.1:{port}";
        await RepoScript.RunOkAsync("scripts/install-service.sh", [
            "--prefix", Path.Combine(root, "opt"), "--config-dir", Path.Combine(root, "etc"), "--unit-dir", Path.Combine(root, "systemd"),
            "--data-dir", Path.Combine(root, "data"), "--from", AppContext.BaseDirectory, "--no-systemctl",
            "--urls", url,
            "--env", $"BATCHRUNNER_ROLE={role}",
            "--env", $"BATCHRUNNER_CONNECTION_STRING={connectionString}",
            "--env", $"BATCHRUNNER_ADVERTISE_URL={url}",
            "--env", $"BATCHRUNNER_NODE_NAME={name}",
            "--env", "BatchRunner__HeartbeatSeconds=1",
            "--env", $"BatchRunner__Labels__machine={name}", .. TestRegistry.InstallServiceArgs]);
        var unit = SystemdUnit.Read(Path.Combine(root, "systemd", "batchrunner.service"));
        var notify = new NotifySocket();
        var process = UnitProcess.Start(unit, notify, Path.Combine(root, "journal.log"));
        var machine = new Machine(name, url, root, unit, process, notify);
        lock (_machines) _machines.Add(machine);
        var ready = notify.ReceiveAsync(TimeSpan.FromSeconds(90), $"READY=1 from {name}");
        var exited = Poll.UntilAsync(() => process.HasExited, TimeSpan.FromSeconds(95), "exit", 100);
        if (await Task.WhenAny(ready, exited) != ready && !ready.IsCompleted)
            throw new Xunit.Sdk.XunitException($"{name} exited ({process.ExitCode}) before READY=1:\n{process.Log()}");
        Assert.Equal("READY=1", await ready);
        return machine;
    }

    private static async Task<string> SubmitAsync(HttpClient http, object spec)
    {
        var r = await http.PostAsJsonAsync("/api/v1/jobs", spec);
        var body = await r.Content.ReadAsStringAsync();
        Assert.True(r.StatusCode == HttpStatusCode.Created, $"{(int)r.StatusCode}: {body}");
        return JsonDocument.Parse(body).RootElement.GetProperty("id").GetString()!;
    }

    private static async Task<JsonElement> GetJobAsync(HttpClient http, string id) =>
        JsonDocument.Parse(await http.GetStringAsync($"/api/v1/jobs/{id}")).RootElement.Clone();

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        foreach (var m in _machines)
        {
            if (!m.Process.HasExited)
            {
                m.Process.Terminate();
                try { await m.Process.WaitForExitAsync(TimeSpan.FromSeconds(40)); }
                catch (TimeoutException) { }
            }
            await m.Process.DisposeAsync();
            m.Notify.Dispose();
            // A killed worker's container (stopped by its watchdog) and its mounts.
            var state = Path.Combine(m.DataDir, "state", "runc");
            if (Directory.Exists(state))
                foreach (var id in (await ExternalCommand.RunAsync("runc", ["--root", state, "list", "-q"])).Split('\n', StringSplitOptions.RemoveEmptyEntries))
                    await ExternalCommand.RunAsync("runc", ["--root", state, "delete", "--force", id.Trim()]);
        }
        BatchRunner.Oci.Snapshots.MountCleanup.UnmountAllUnder(_root);
        if (_db is not null) await _db.DisposeAsync();
        if (_registry is not null) await _registry.DisposeAsync();
        Directory.Delete(_root, recursive: true);
    }
}
