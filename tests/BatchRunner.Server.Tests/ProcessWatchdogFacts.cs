using System.Diagnostics;
using BatchRunner.Server.Nodes;

namespace BatchRunner.Server.Tests;

/// <summary>The watchdog shell that kills a dead worker's containers.</summary>
public sealed class ProcessWatchdogFacts
{
    [Fact]
    public async Task Launch_RecreatesNothing_WhenTheDataDirIsGoneByTheTimeTheWorkerEnds()
    {
        // A test fixture (or an operator) removes the data dir after stopping the worker; `runc list` would
        // create <data dir>/runtime again, mode 0700, once the worker process has exited.
        var dataDir = Path.Combine("/tmp", "br-watchdog-tests-" + Guid.NewGuid().ToString("N")[..8]);
        using var worker = Process.Start("true")!;
        await worker.WaitForExitAsync();

        using var watchdog = ProcessWatchdog.Launch(worker.Id, "/usr/sbin/runc", Path.Combine(dataDir, "runtime"), "br-none-");
        await watchdog!.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(30));

        var created = Directory.Exists(dataDir);
        if (created) Directory.Delete(dataDir, recursive: true);
        Assert.False(created, $"the watchdog created {dataDir}");
    }
}
