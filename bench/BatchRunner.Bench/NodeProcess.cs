using System.Diagnostics;
using System.Net;
using BatchRunner.Testing;

namespace BatchRunner.Bench;

/// <summary>Waiting until a real <c>batchrunner</c> process started by a bench answers (its port: <see cref="BenchServerProcess.FreePort"/>).</summary>
public static class NodeProcess
{
    /// <summary>Waits (<paramref name="timeout"/>, 60 s by default) until <paramref name="process"/> answers <c>/healthz</c>
    /// with 200 on <paramref name="http"/>; fails at once if it exits.</summary>
    public static Task WaitHealthyAsync(Process process, HttpClient http, string name, TimeSpan? timeout = null) =>
        Poll.UntilAsync(async () =>
        {
            if (process.HasExited) throw new InvalidOperationException($"batchrunner ({name}) exited {process.ExitCode}");
            try { return (await http.GetAsync("/healthz")).StatusCode == HttpStatusCode.OK; }
            catch (HttpRequestException) { return false; }
        }, ok => ok, timeout ?? TimeSpan.FromSeconds(60), "batchrunner to answer", 100);
}
