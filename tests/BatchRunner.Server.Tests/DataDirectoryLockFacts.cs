using BatchRunner.Server.Hosting;

namespace BatchRunner.Server.Tests;

/// <summary>
/// One BatchRunner process per data directory (<see cref="DataDirectoryLock"/>): a second start on a directory in use stops
/// before it touches anything, where it used to run its start-up janitor and remove the running node's disks, mounts
/// and run directories as a crashed run's leftovers.
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
            var e = Assert.Throws<InvalidOperationException>(() => DataDirectoryLock.Acquire(dir));
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
    public async Task ASecondServer_OnARunningNodesDataDirectory_StopsBeforeTouchingIt()
    {
        // The running node keeps disks mounted between jobs: one of its jobs first.
        var id = await f.Api.SubmitIdAsync(new { image = f.Busybox, command = new[] { "true" } });
        Assert.Equal("succeeded", (await f.Api.WaitForFinalAsync(id)).GetProperty("state").GetString());
        var run = Path.Combine(f.DataDir, "run");
        var before = Directory.GetFileSystemEntries(run).Order().ToList();
        var mountsBefore = MountsUnder(f.DataDir);

        var e = await Assert.ThrowsAsync<InvalidOperationException>(() => BatchRunnerApp.BuildAsync([
            "--urls", "http://127.0.0.1:0",
            $"--BatchRunner:DataDir={f.DataDir}",
            "--BatchRunner:ApiKey=second-server-key",
        ]));

        Assert.Contains("is in use by another BatchRunner process", e.Message);
        Assert.Equal(before, Directory.GetFileSystemEntries(run).Order().ToList());
        Assert.Equal(mountsBefore, MountsUnder(f.DataDir));
        // And the running node carries on.
        var next = await f.Api.SubmitIdAsync(new { image = f.Busybox, command = new[] { "true" } });
        Assert.Equal("succeeded", (await f.Api.WaitForFinalAsync(next)).GetProperty("state").GetString());
    }

    private static List<string> MountsUnder(string dir) =>
        [.. File.ReadAllLines("/proc/self/mountinfo").Select(l => l.Split(' ')[4]).Where(m => m.StartsWith(dir + "/", StringComparison.Ordinal)).Order()];
}
