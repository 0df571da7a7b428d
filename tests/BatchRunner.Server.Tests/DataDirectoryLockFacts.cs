using BatchRunner.Server.Hosting;
using Microsoft.Extensions.DependencyInjection;

namespace BatchRunner.Server.Tests;

/// <summary>
/// One BatchRunner process per data directory (<see cref="DataDirectoryLock"/>): a second start on a directory in use stops
/// before it touches anything, in one line and with status 2, where it used to run its start-up janitor and remove the
/// running node's disks, mounts and run directories as a crashed run's leftovers.
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class DataDirectoryLockFacts(ServerFixture f)
{
    [Fact]
    public void Acquire_RefusesADirectoryInUse_NamingTheHolder_AndTakesItOnceReleased()
    {
        var dir = Path.Combine(Path.GetTempPath(), "br-lock-" + Guid.NewGuid().ToString("N")[..8]);
        try
        {
            var held = DataDirectoryLock.Acquire(dir);
            var e = Assert.Throws<StartupRefusedException>(() => DataDirectoryLock.Acquire(dir));
            Assert.Contains($"the data directory {dir} is in use by another BatchRunner process (pid {Environment.ProcessId})", e.Message);
            held.Dispose();
            DataDirectoryLock.Acquire(dir).Dispose();
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public async Task ASecondServer_OnARunningNodesDataDirectory_IsRefused_AndTheNodeCarriesOn()
    {
        var e = await Assert.ThrowsAsync<StartupRefusedException>(() => BatchRunnerApp.BuildAsync([
            "--urls", "http://127.0.0.1:0",
            $"--BatchRunner:DataDir={f.DataDir}",
            "--BatchRunner:ApiKey=second-server-key",
        ]));

        Assert.Contains("is in use by another BatchRunner process", e.Message);
        var next = await f.Api.SubmitIdAsync(new { image = f.Busybox, command = new[] { "true" } });
        Assert.Equal("succeeded", (await f.Api.WaitForFinalAsync(next)).GetProperty("state").GetString());
    }

    [Fact]
    public async Task TheServerProcess_OnADirectoryInUse_SaysWhyInOneLine_AndExitsWith2()
    {
        // What a start-up janitor takes for a crashed run's leftover of this node (its container prefix): it must survive.
        var sentinel = Path.Combine(f.DataDir, "run", f.App.Services.GetRequiredService<BatchRunner.Server.Nodes.NodeIdentity>().ContainerPrefix + "lock-sentinel");
        Directory.CreateDirectory(sentinel);
        var (code, said, stdout) = await ServerProcess.RunToExitAsync(
            ["--urls", "http://127.0.0.1:0", $"--BatchRunner:DataDir={f.DataDir}", "--BatchRunner:ApiKey=second-process-key"], TimeSpan.FromSeconds(60));

        Assert.True(code == 2, $"exit {code}: {stdout}{said}");
        Assert.StartsWith($"batchrunner: the data directory {f.DataDir} is in use by another BatchRunner process (pid {Environment.ProcessId})", said);
        Assert.DoesNotContain("\n", said);
        Assert.DoesNotContain(" at ", said);
        Assert.True(Directory.Exists(sentinel));
        Directory.Delete(sentinel);
    }

}
