namespace BatchRunner.Runtime.Tests;

/// <summary>The watchdog shell that kills a dead worker's containers.</summary>
public sealed class ContainerWatchdogFacts
{
    [Fact]
    public async Task Launch_RecreatesNothing_WhenTheDataDirIsGoneByTheTimeTheWorkerEnds()
    {
        // A test fixture (or an operator) removes the data dir after stopping the worker; `runc list` would
        // create <data dir>/runtime again, mode 0700, once the worker process has exited.
        var dataDir = Path.Combine("/tmp", "br-watchdog-tests-" + Guid.NewGuid().ToString("N")[..8]);
        var watchdog = ContainerWatchdog.Launch("/usr/sbin/runc", Path.Combine(dataDir, "runtime"), "br-none-");
        var exited = watchdog.WaitForExitAsync();
        watchdog.Dispose(); // the worker's end, as the watchdog sees it: its lifeline closed
        await exited.WaitAsync(TimeSpan.FromSeconds(30));

        var created = Directory.Exists(dataDir);
        if (created) Directory.Delete(dataDir, recursive: true);
        Assert.False(created, $"the watchdog created {dataDir}");
    }

    [Fact]
    public async Task Launch_KillsTheDeadWorkersContainers_AndOnlyThose()
    {
        var dir = Path.Combine("/tmp", "br-watchdog-tests-" + Guid.NewGuid().ToString("N")[..8]);
        var state = Path.Combine(dir, "runtime");
        var rootfs = BatchRunner.Testing.BusyboxRootfs.Create(Path.Combine(dir, "rootfs"));
        var runtime = new BatchRunner.Runtime.RuncRuntime(new BatchRunner.Runtime.RuncRuntimeOptions { BinaryPath = "/usr/sbin/runc", StateRoot = state });
        var tag = Guid.NewGuid().ToString("N")[..6];
        async Task<BatchRunner.Runtime.IRunningContainer> Sleep(string id) => await runtime.StartAsync(
            new BatchRunner.Runtime.ContainerSpec { Id = id, RootfsPath = rootfs, Args = ["sleep", "600"], ReadonlyRootfs = true },
            Path.Combine(dir, "bundles", id), new BatchRunner.Runtime.ContainerIo(Path.Combine(dir, id + ".out"), Path.Combine(dir, id + ".err")), CancellationToken.None);
        var mine = await Sleep($"br-wd{tag}-1");
        var other = await Sleep($"br-other{tag}-1");
        try
        {
            var watchdog = ContainerWatchdog.Launch("/usr/sbin/runc", state, $"br-wd{tag}-");
            var exited = watchdog.WaitForExitAsync();
            // Armed: while its lifeline is held (this process lives), it waits and kills nothing.
            await Task.Delay(TimeSpan.FromSeconds(1));
            Assert.False(exited.IsCompleted, "the watchdog acted while its worker lived");
            Assert.False(mine.WaitAsync(CancellationToken.None).IsCompleted, "a container was killed while its worker lived");

            watchdog.Dispose();
            await exited.WaitAsync(TimeSpan.FromSeconds(30));

            var exit = await mine.WaitAsync(new CancellationTokenSource(TimeSpan.FromSeconds(10)).Token);
            Assert.Equal(9, exit.Signal);
            Assert.False(other.WaitAsync(CancellationToken.None).IsCompleted, "another owner's container was killed");
        }
        finally
        {
            await mine.DisposeAsync();
            await other.DisposeAsync();
            Directory.Delete(dir, recursive: true);
        }
    }
}
