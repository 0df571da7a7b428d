using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text.RegularExpressions;
using BatchRunner.Testing;

namespace BatchRunner.Server.Tests;

/// <summary>
/// A real BatchRunner process (the server's own executable) with its own embedded PostgreSQL and data directory,
/// configured by nothing but the arguments given: for what the defaults do. Collects stdout and stderr lines;
/// disposing stops it (SIGTERM, then kill), its PostgreSQL with it, and removes the data directory.
/// </summary>
public sealed partial class ServerProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly ConcurrentQueue<string> _lines = new();

    private ServerProcess(Process process, string dataDir, string key)
    {
        _process = process;
        DataDir = dataDir;
        Key = key;
    }

    public string DataDir { get; }
    public string Key { get; }
    public BatchRunnerClient Api { get; private set; } = null!;
    /// <summary>stdout lines as they are, stderr lines prefixed "stderr: ".</summary>
    public IReadOnlyList<string> Lines => _lines.ToArray();

    /// <param name="args">Settings beyond the data directory, the key and a free loopback port.</param>
    /// <param name="dataDir">An existing data directory to start on (removed on disposal too); null: a new one.</param>
    /// <param name="nodeName">null: NAME-random.</param>
    public static async Task<ServerProcess> StartAsync(string name, IEnumerable<string> args, IReadOnlyDictionary<string, string>? environment = null,
        string? dataDir = null, string? nodeName = null)
    {
        dataDir ??= Path.Combine("/tmp", $"br-{name}-" + Guid.NewGuid().ToString("N")[..8]);
        var key = name + "-key";
        var psi = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
        {
            ArgumentList =
            {
                Path.Combine(AppContext.BaseDirectory, "batchrunner.dll"),
                "--urls", "http://127.0.0.1:0",
                $"--BatchRunner:DataDir={dataDir}",
                $"--BatchRunner:ApiKey={key}",
                "--BatchRunner:NodeName=" + (nodeName ?? $"{name}-" + Guid.NewGuid().ToString("N")[..6]),
            },
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        foreach (var (k, v) in environment ?? new Dictionary<string, string>()) psi.Environment[k] = v;
        psi.Environment.Remove("ASPNETCORE_ENVIRONMENT");
        psi.Environment.Remove("BATCHRUNNER_API_KEY");
        var server = new ServerProcess(Process.Start(psi)!, dataDir, key);
        server._process.OutputDataReceived += (_, e) => { if (e.Data is not null) server._lines.Enqueue(e.Data); };
        server._process.ErrorDataReceived += (_, e) => { if (e.Data is not null) server._lines.Enqueue("stderr: " + e.Data); };
        server._process.BeginOutputReadLine();
        server._process.BeginErrorReadLine();
        try
        {
            // The address comes from the host's own "Now listening on" line (plain or JSON).
            var address = await Poll.UntilAsync(() =>
            {
                if (server._process.HasExited) throw new InvalidOperationException($"batchrunner exited {server._process.ExitCode}:\n{string.Join('\n', server.Lines)}");
                var m = server.Lines.Select(l => ListeningOn().Match(l)).FirstOrDefault(m => m.Success);
                return Task.FromResult(m?.Groups[1].Value);
            }, a => a is not null, TimeSpan.FromSeconds(60), "batchrunner to listen", 100);
            server.Api = new BatchRunnerClient(address!, key);
            return server;
        }
        catch
        {
            await server.DisposeAsync();
            throw;
        }
    }

    /// <summary>SIGTERM: the host stops gracefully (and its embedded PostgreSQL with it).</summary>
    public async Task StopAsync()
    {
        if (_process.HasExited) return;
        await ExternalCommand.RunAsync("kill", ["-TERM", _process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await _process.WaitForExitAsync(cts.Token);
    }

    public async ValueTask DisposeAsync()
    {
        Api?.Dispose();
        try { await StopAsync(); }
        catch (Exception e) when (e is OperationCanceledException or InvalidOperationException) { }
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync();
        }
        _process.Dispose();
        await RemoveLeftoversAsync(DataDir);
    }

    /// <summary>Runs the server with <paramref name="args"/> alone (a start expected to be refused) until it exits: its
    /// exit status, stderr (trimmed) and stdout.</summary>
    public static async Task<(int Code, string Stderr, string Stdout)> RunToExitAsync(IEnumerable<string> args, TimeSpan timeout)
    {
        var psi = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "batchrunner.dll"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var process = Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var deadline = new CancellationTokenSource(timeout);
        await process.WaitForExitAsync(deadline.Token);
        return (process.ExitCode, (await stderr).Trim(), await stdout);
    }

    /// <summary>What a server process on <paramref name="dataDir"/> may have left: its embedded PostgreSQL (stopped), its
    /// state tmpfs and any job's mounts (unmounted), then the directory itself.</summary>
    public static async Task RemoveLeftoversAsync(string dataDir)
    {
        await StopEmbeddedPostgresAsync(dataDir);
        BatchRunner.Oci.Snapshots.MountCleanup.UnmountAllUnder(dataDir);
        if (Directory.Exists(dataDir)) Directory.Delete(dataDir, recursive: true);
    }

    /// <summary>When the process had to be killed, its PostgreSQL is still running: stop it before removing the directory.</summary>
    private static async Task StopEmbeddedPostgresAsync(string dataDir)
    {
        var pgData = Path.Combine(dataDir, "postgres");
        if (!File.Exists(Path.Combine(pgData, "postmaster.pid"))) return;
        var pgCtl = Directory.GetDirectories("/usr/lib/postgresql").Select(d => Path.Combine(d, "bin", "pg_ctl")).First(File.Exists);
        try { await ExternalCommand.RunAsync("runuser", ["-u", "postgres", "--", pgCtl, "-D", pgData, "-m", "immediate", "-w", "stop"]); }
        catch (Exception) { /* already stopped */ }
    }

    [GeneratedRegex(@"Now listening on: (http://127\.0\.0\.1:\d+)")]
    private static partial Regex ListeningOn();
}
