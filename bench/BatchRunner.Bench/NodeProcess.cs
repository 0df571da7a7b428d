using System.Diagnostics;
using System.Net;
using BatchRunner.Testing;

namespace BatchRunner.Bench;

/// <summary>What the benches that run the real <c>batchrunner</c> process share: a free port, and waiting until it answers.</summary>
public static class NodeProcess
{
    public static int FreePort()
    {
        using var l = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }

    /// <summary>Waits (60 s at most) until <paramref name="process"/> answers <c>/healthz</c> with 200 on <paramref name="http"/>.</summary>
    public static Task WaitHealthyAsync(Process process, HttpClient http, string name) =>
        Poll.UntilAsync(async () =>
        {
            if (process.HasExited) throw new InvalidOperationException($"batchrunner ({name}) exited {process.ExitCode}");
            try { return (await http.GetAsync("/healthz")).StatusCode == HttpStatusCode.OK; }
            catch (HttpRequestException) { return false; }
        }, ok => ok, TimeSpan.FromSeconds(60), "batchrunner to answer", 100);
}
