using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using BatchRunner.Testing;

namespace BatchRunner.Bench;

/// <summary>
/// The built `batchrunner` (src/BatchRunner.Server, copied next to the bench) as a process of its own, role all, one
/// node, its own data directory and embedded PostgreSQL, so that /proc/PID/stat counts the server's CPU alone and
/// the postmaster's processes can be summed apart. Its stdout and stderr go to DATA/../NAME.log. Disposing sends
/// SIGTERM, waits, and removes the data directory.
/// </summary>
public sealed class BenchServerProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly Task _pumps;
    private readonly StreamWriter _log;

    public string DataDir { get; }
    public string LogPath { get; }
    public HttpClient Http { get; }
    public int Pid => _process.Id;

    private BenchServerProcess(Process process, Task pumps, StreamWriter log, string dataDir, string logPath, HttpClient http) =>
        (_process, _pumps, _log, DataDir, LogPath, Http) = (process, pumps, log, dataDir, logPath, http);

    public static async Task<BenchServerProcess> StartAsync(string root, string name, string key, IEnumerable<string> args,
        string? dataDir = null)
    {
        dataDir ??= Path.Combine(root, name + "-" + Guid.NewGuid().ToString("N")[..6]);
        var port = FreePort();
        var psi = new ProcessStartInfo(Path.Combine(AppContext.BaseDirectory, "batchrunner"))
        {
            UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true,
        };
        foreach (var a in (string[])["--urls", $"http://127.0.0.1:{port}", $"--BatchRunner:DataDir={dataDir}", $"--BatchRunner:ApiKey={key}",
                     $"--BatchRunner:NodeName={name}", .. TestRegistry.ServerArgs, .. args])
            psi.ArgumentList.Add(a);
        psi.Environment.Remove("BATCHRUNNER_LOG_FORMAT");
        var process = Process.Start(psi)!;
        process.StandardInput.Close();
        var logPath = dataDir + ".log";
        var log = new StreamWriter(logPath, append: true) { AutoFlush = true };
        var pumps = Task.WhenAll(PumpAsync(process.StandardOutput, log), PumpAsync(process.StandardError, log));
        var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}"), Timeout = TimeSpan.FromSeconds(60) };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", key);
        var server = new BenchServerProcess(process, pumps, log, dataDir, logPath, http);
        try
        {
            await NodeProcess.WaitHealthyAsync(process, http, $"{name}; see {logPath}", TimeSpan.FromSeconds(90));
        }
        catch
        {
            await server.StopAsync(removeData: true);
            throw;
        }
        return server;
    }

    private static async Task PumpAsync(StreamReader reader, StreamWriter log)
    {
        string? line;
        while ((line = await reader.ReadLineAsync()) is not null)
            lock (log) log.WriteLine(line);
    }

    /// <summary>SIGTERM, wait for the exit; the data directory stays unless <paramref name="removeData"/>.</summary>
    public async Task StopAsync(bool removeData)
    {
        if (!_process.HasExited)
        {
            UnixSignals.Send(_process.Id, UnixSignals.Term);
            await _process.WaitForExitAsync();
        }
        await _pumps;
        await _log.DisposeAsync();
        Http.Dispose();
        _process.Dispose();
        if (removeData && Directory.Exists(DataDir)) Directory.Delete(DataDir, recursive: true);
    }

    public async ValueTask DisposeAsync() => await StopAsync(removeData: true);

    public static int FreePort()
    {
        using var l = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }
}
