using System.Net;
using System.Net.Sockets;

namespace BatchRunner.Server.Tests;

/// <summary>
/// The server process, started as a person starts it, on a setting it cannot use or an address another process holds:
/// one line on stderr that names the fault, exit status 2, no stack trace, and nothing left running or mounted (the
/// embedded PostgreSQL it had started is stopped again).
/// </summary>
public sealed class StartupFailureFacts
{
    private static Task<(int Code, string Stderr, string Stdout)> RunServerAsync(params string[] args) =>
        ServerProcess.RunToExitAsync(args, TimeSpan.FromSeconds(120));

    [Theory]
    [InlineData("--BatchRunner:Workers=four", "batchrunner: invalid setting: Failed to convert configuration value 'four' at 'BatchRunner:Workers' to type 'System.Int32'")]
    [InlineData("--BatchRunner:Capacity:Memory=lots", "batchrunner: invalid setting: BatchRunner:Capacity:Memory \"lots\" is not a quantity")]
    [InlineData("--BatchRunner:Capacity:Cpus=0", "batchrunner: invalid setting: BatchRunner:Capacity:Cpus must be more than 0")]
    [InlineData("--BatchRunner:Role=boss", "batchrunner: invalid setting: BatchRunner:Role must be all, api or worker, not \"boss\"")]
    public async Task AnInvalidSetting_IsNamedInOneLine_AndTheProcessExitsWith2(string setting, string said)
    {
        var dir = Path.Combine("/tmp", "br-startup-" + Guid.NewGuid().ToString("N")[..8]);
        try
        {
            var (code, stderr, stdout) = await RunServerAsync("--urls", "http://127.0.0.1:0", $"--BatchRunner:DataDir={dir}", "--BatchRunner:ApiKey=k", setting);
            Assert.True(code == 2, $"exit {code}: {stdout}{stderr}");
            Assert.StartsWith(said, stderr);
            Assert.DoesNotContain("\n", stderr);
            Assert.DoesNotContain("Exception", stderr);
            // Refused before anything was made: no data directory.
            Assert.False(Directory.Exists(dir));
        }
        finally
        {
            await ServerProcess.RemoveLeftoversAsync(dir);
        }
    }

    [Fact]
    public async Task AnAddressInUse_IsNamedInOneLine_AndWhatHadStartedIsStoppedAgain()
    {
        using var holder = new TcpListener(IPAddress.Loopback, 0);
        holder.Start();
        var port = ((IPEndPoint)holder.LocalEndpoint).Port;
        var dir = Path.Combine("/tmp", "br-startup-" + Guid.NewGuid().ToString("N")[..8]);
        try
        {
            var (code, stderr, stdout) = await RunServerAsync("--urls", $"http://127.0.0.1:{port}", $"--BatchRunner:DataDir={dir}", "--BatchRunner:ApiKey=k");
            Assert.True(code == 2, $"exit {code}: {stderr}");
            Assert.Equal($"batchrunner: Failed to bind to address http://127.0.0.1:{port}: address already in use: another process listens there; " +
                "choose another with --urls or BATCHRUNNER_URLS", stderr);
            // It had got as far as its embedded PostgreSQL (its cluster is there), which is not running now, and nothing
            // under its directory is still mounted.
            Assert.True(File.Exists(Path.Combine(dir, "postgres", "PG_VERSION")), stdout);
            Assert.False(File.Exists(Path.Combine(dir, "postgres", "postmaster.pid")), "the embedded PostgreSQL is still running");
            Assert.DoesNotContain(File.ReadAllLines("/proc/self/mounts"), l => l.Split(' ')[1].StartsWith(dir + "/", StringComparison.Ordinal));
        }
        finally
        {
            await ServerProcess.RemoveLeftoversAsync(dir);
        }
    }
}
