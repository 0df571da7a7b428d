using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using BatchRunner.Server.Storage;
using BatchRunner.Testing;
using Microsoft.Extensions.Logging.Abstractions;

namespace BatchRunner.Server.Tests.Cluster;

/// <summary>
/// Several real BatchRunner processes (the published apphost next to the tests) sharing one real
/// PostgreSQL, like workers on several machines: each node has its own data directory, its own runc
/// state and its own cgroups. Nodes can be killed (SIGKILL, SIGTERM) and restarted. Without a shared
/// database (<see cref="StartAsync"/> with <c>sharedDatabase: false</c>) each node runs its own embedded
/// PostgreSQL in its data directory, as a single machine does.
/// </summary>
public sealed class TestCluster : IAsyncDisposable
{
    public const string ApiKey = "cluster-key-5f2a";

    private readonly List<NodeProcess> _nodes = [];

    private TestCluster(string root, EmbeddedPostgres? pg, TestRegistry registry, string busybox)
    {
        Root = root;
        Postgres = pg;
        Registry = registry;
        Busybox = busybox;
    }

    public string Root { get; }
    /// <summary>The shared database; null when every node runs its own embedded one.</summary>
    public EmbeddedPostgres? Postgres { get; }
    public TestRegistry Registry { get; }
    public string Busybox { get; }
    /// <summary>The API of the first node started with role all or api.</summary>
    public BatchRunnerClient Api { get; private set; } = null!;

    public static async Task<TestCluster> StartAsync(bool sharedDatabase = true)
    {
        var root = Path.Combine("/tmp", "br-cluster-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(root);
        var pg = sharedDatabase ? await EmbeddedPostgres.StartAsync(Path.Combine(root, "db"), NullLogger.Instance, CancellationToken.None) : null;
        var registry = await TestRegistry.StartAsync();
        var busybox = await TestImages.PushBusyboxAsync(registry);
        return new TestCluster(root, pg, registry, busybox);
    }

    /// <summary>Starts a node process and waits until it answers /healthz.</summary>
    public async Task<NodeProcess> StartNodeAsync(string name, string role = "worker", double cpus = 2, int workers = 2,
        int graceSeconds = 30, params string[] extra)
    {
        var node = new NodeProcess(this, name, role, cpus, workers, graceSeconds, extra);
        _nodes.Add(node);
        await node.StartAsync();
        if (role is "all" or "api" && Api is null) Api = new BatchRunnerClient(node.Url, ApiKey, TimeSpan.FromSeconds(30));
        if (role != "api" && Api is not null)
        {
            // A submission that needs this node (its labels) is judged against the live nodes the API node saw last:
            // wait until the node is listed, then for the API's cache of live nodes (2 s) to have been refreshed.
            await Poll.UntilAsync(async () => (await Api.NodesAsync()).EnumerateArray().Any(n => n.GetProperty("name").GetString() == name),
                ok => ok, TimeSpan.FromSeconds(30), $"node {name} listed by the API", 100);
            await Task.Delay(TimeSpan.FromSeconds(2.1));
        }
        return node;
    }

    /// <summary>The API's wait, with every node's log lines about the job in the message when it times out.</summary>
    public async Task<JsonElement> WaitAsync(string id, Func<JsonElement, bool> done, TimeSpan timeout, string what)
    {
        try
        {
            return await Api.WaitAsync(id, done, timeout, what);
        }
        catch (TimeoutException e)
        {
            // The nodes' logs say why; they are gone once the cluster is disposed.
            throw new TimeoutException(e.Message + "\n" + string.Join("\n", _nodes.Select(n => $"--- {n.Name}: lines about the job ---\n{n.LogAbout(id)}\n--- {n.Name}: last lines ---\n{n.Log()}")), e);
        }
    }

    public Task<JsonElement> WaitFinalAsync(string id, TimeSpan? timeout = null) =>
        WaitAsync(id, j => j.GetProperty("state").GetString() is "succeeded" or "failed" or "cancelled", timeout ?? TimeSpan.FromSeconds(90), "final state");

    public async ValueTask DisposeAsync()
    {
        Api?.Dispose();
        foreach (var n in _nodes) await n.DisposeAsync();
        // Whatever a killed node left and no restart removed: containers, then mounts.
        foreach (var n in _nodes)
        {
            var state = Path.Combine(n.DataDir, "state", "runc");
            if (!Directory.Exists(state)) continue;
            var ids = await ExternalCommand.RunAsync("runc", ["--root", state, "list", "-q"]);
            foreach (var id in ids.Split('\n', StringSplitOptions.RemoveEmptyEntries))
                await ExternalCommand.RunAsync("runc", ["--root", state, "delete", "--force", id.Trim()]);
        }
        BatchRunner.Oci.Snapshots.MountCleanup.UnmountAllUnder(Root);
        if (Postgres is not null) await Postgres.StopAsync();
        // A node's own embedded cluster outlives the node when it was killed: stop what still runs there.
        foreach (var n in _nodes) await n.StopLeftoverPostgresAsync();
        await Registry.DisposeAsync();
        try { Directory.Delete(Root, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    internal static int FreePort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }
}

/// <summary>One BatchRunner process of a <see cref="TestCluster"/>.</summary>
public sealed class NodeProcess : IAsyncDisposable
{
    private readonly TestCluster _cluster;
    private readonly string[] _args;
    private Process? _process;

    internal NodeProcess(TestCluster cluster, string name, string role, double cpus, int workers, int graceSeconds, string[] extra)
    {
        _cluster = cluster;
        Name = name;
        Port = TestCluster.FreePort();
        DataDir = Path.Combine(cluster.Root, "nodes", name);
        _args =
        [
            "--urls", Url,
            $"--BatchRunner:DataDir={DataDir}",
            .. TestRegistry.ServerArgs,
            .. (cluster.Postgres is { } pg ? [$"--BatchRunner:ConnectionString={pg.ConnectionString}"] : Array.Empty<string>()),
            $"--BatchRunner:ApiKey={TestCluster.ApiKey}",
            $"--BatchRunner:Role={role}",
            $"--BatchRunner:NodeName={name}",
            $"--BatchRunner:Workers={workers}",
            $"--BatchRunner:Capacity:Cpus={cpus}",
            "--BatchRunner:HeartbeatSeconds=1",
            $"--BatchRunner:ShutdownGraceSeconds={graceSeconds}",
            "--Logging:LogLevel:Default=Warning",
            "--Logging:LogLevel:BatchRunner=Information",
            .. extra,
        ];
    }

    public string Name { get; }
    public int Port { get; }
    public string Url => $"http://127.0.0.1:{Port}";
    public string DataDir { get; }
    public string LogFile => Path.Combine(_cluster.Root, $"{Name}.log");
    public int Pid => _process?.Id ?? 0;
    public bool HasExited => _process is null || _process.HasExited;

    public async Task StartAsync()
    {
        var exe = Path.Combine(AppContext.BaseDirectory, "batchrunner");
        // stdout/stderr go to a file through the shell so that a killed node leaves its log behind.
        var psi = new ProcessStartInfo("/bin/sh") { UseShellExecute = false, RedirectStandardInput = true };
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add("exec \"$0\" \"$@\" >>\"$BR_LOG\" 2>&1");
        psi.ArgumentList.Add(exe);
        foreach (var a in _args) psi.ArgumentList.Add(a);
        psi.Environment["BR_LOG"] = LogFile;
        psi.Environment.Remove("BATCHRUNNER_API_KEY");
        _process = Process.Start(psi)!;
        _process.StandardInput.Close();
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(2) };
        await Poll.UntilAsync(async () =>
        {
            if (_process.HasExited) throw new InvalidOperationException($"node {Name} exited with {_process.ExitCode}: {Log()}");
            try { return (await http.GetAsync($"{Url}/healthz")).StatusCode == HttpStatusCode.OK; }
            catch (HttpRequestException) { return false; }
            catch (TaskCanceledException) { return false; }
        }, ok => ok, TimeSpan.FromSeconds(60), $"node {Name} /healthz", 100);
    }

    public void Kill() => Signal(9);

    public void Terminate() => Signal(15);

    private void Signal(int sig)
    {
        if (_process is not { HasExited: false }) return;
        using var kill = Process.Start("kill", ["-s", sig.ToString(System.Globalization.CultureInfo.InvariantCulture), _process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)])!;
        kill.WaitForExit();
    }

    public async Task WaitForExitAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        await _process!.WaitForExitAsync(cts.Token);
    }

    public string Log() => File.Exists(LogFile) ? string.Join('\n', File.ReadLines(LogFile).TakeLast(60)) : "(no log)";

    /// <summary>Every log entry that names <paramref name="text"/> (a job id), with its category line.</summary>
    public string LogAbout(string text)
    {
        if (!File.Exists(LogFile)) return "(no log)";
        var lines = File.ReadAllLines(LogFile);
        var picked = new List<string>();
        for (var i = 0; i < lines.Length; i++)
            if (lines[i].Contains(text, StringComparison.Ordinal)) { if (i > 0) picked.Add(lines[i - 1]); picked.Add(lines[i]); }
        return string.Join('\n', picked);
    }

    /// <summary>Ends a postmaster left running in the node's own embedded cluster (the node was killed).</summary>
    public async Task StopLeftoverPostgresAsync()
    {
        var pgData = Path.Combine(DataDir, "postgres");
        if (!File.Exists(Path.Combine(pgData, "postmaster.pid"))) return;
        var pgCtl = Path.Combine(EmbeddedPostgres.FindServerBinaries()!, "pg_ctl");
        try { await ExternalCommand.RunAsync("runuser", ["-u", "postgres", "--", pgCtl, "-D", pgData, "-m", "immediate", "-w", "stop"]); }
        catch (InvalidOperationException) { /* not running */ }
    }

    public async ValueTask DisposeAsync()
    {
        if (_process is { HasExited: false })
        {
            Terminate();
            try { await WaitForExitAsync(TimeSpan.FromSeconds(30)); }
            catch (OperationCanceledException) { Kill(); await _process.WaitForExitAsync(); }
        }
        // Idempotent: a test may dispose a node it started before the cluster disposes them all.
        _process?.Dispose();
        _process = null;
    }
}
