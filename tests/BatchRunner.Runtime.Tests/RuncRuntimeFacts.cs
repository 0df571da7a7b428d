using BatchRunner.Runtime.Logs;
using System.Diagnostics;
using BatchRunner.Runtime;
using BatchRunner.Testing;

namespace BatchRunner.Runtime.Tests;

/// <summary>Integration tests with the real runc, as root, on this host's cgroups.</summary>
public sealed class RuncRuntimeFacts(RuncFixture fx) : IClassFixture<RuncFixture>
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);

    private async Task<(BatchRunner.Core.ExitResult Exit, string Stdout, string Stderr)> RunToEndAsync(ContainerSpec spec)
    {
        await using var c = await fx.StartAsync(spec);
        var exit = await c.WaitAsync(new CancellationTokenSource(Deadline).Token);
        var io = fx.Io(spec.Id);
        return (exit, await StoredLog.ReadAllTextAsync(io.StdoutPath, "stdout"), await StoredLog.ReadAllTextAsync(io.StderrPath, "stderr"));
    }

    [Fact]
    public async Task StartAsync_WritesStdoutAndStderrToFiles_WhenJobEchoes()
    {
        var (exit, stdout, stderr) = await RunToEndAsync(fx.Spec(fx.NewId(), "sh", "-c", "echo to-stdout; echo to-stderr >&2"));
        Assert.Equal(0, exit.ExitCode);
        Assert.Null(exit.Signal);
        Assert.False(exit.OomKilled);
        Assert.Equal("to-stdout\n", stdout);
        Assert.Equal("to-stderr\n", stderr);
    }

    [Fact]
    public async Task StdoutFile_IsReadable_WhileJobRuns()
    {
        var spec = fx.Spec(fx.NewId(), "sh", "-c", "echo first-line; exec sleep 600");
        await using var c = await fx.StartAsync(spec);
        await Poll.UntilAsync(() => File.Exists(fx.Io(spec.Id).StdoutPath) && File.ReadAllText(fx.Io(spec.Id).StdoutPath).Contains("first-line"), Deadline, "output of a running job");
        await c.KillAsync(CancellationToken.None);
    }

    [Fact]
    public async Task WaitAsync_ReportsExitCode_WhenJobExitsWith3()
    {
        var (exit, _, _) = await RunToEndAsync(fx.Spec(fx.NewId(), "sh", "-c", "exit 3"));
        Assert.Equal(new BatchRunner.Core.ExitResult(3, null, false), exit);
    }

    [Fact]
    public async Task WaitAsync_ReportsSuccess_WhenJobExitsBeforeStartReturns()
    {
        var (exit, _, _) = await RunToEndAsync(fx.Spec(fx.NewId(), "/bin/true"));
        Assert.True(exit.Successful);
    }

    [Fact]
    public async Task WaitAsync_ReportsOomKilled_WhenMainProcessExceedsMemoryLimit()
    {
        // tail keeps everything since the last newline; /dev/zero has none, so it grows until killed.
        var spec = fx.Spec(fx.NewId(), "tail", "/dev/zero") with { MemoryLimitBytes = 32 << 20 };
        await using var c = await fx.StartAsync(spec);
        var exit = await c.WaitAsync(new CancellationTokenSource(Deadline).Token);
        Assert.True(exit.OomKilled);
        Assert.Equal(137, exit.ExitCode);
        Assert.Equal(9, exit.Signal);
        var usage = c.ReadUsage();
        Assert.Equal(1, usage.OomKills);
        Assert.InRange(usage.MaxMemoryBytes!.Value, 30L << 20, 32L << 20);
    }

    [Fact]
    public async Task WaitAsync_ReportsOomKilled_WhenShellChildIsKilledAndShellExitsZero()
    {
        // The hog raises its own oom_score_adj so that the OOM killer picks it, never the shell (PID 1),
        // whatever the kernel's momentary accounting: the shell must live to exit 0. It is the only process that
        // allocates (dd's 100 MiB buffer): with a pipe (head | tail) the writer's pipe pages could meet the limit again
        // while the killed reader's memory was not yet freed, and the kernel then took the shell as a second victim.
        var spec = fx.Spec(fx.NewId(), "sh", "-c",
            "sh -c 'echo 1000 >/proc/self/oom_score_adj; exec dd if=/dev/zero of=/dev/null bs=100M count=1'; echo hog-status=$?; exit 0") with { MemoryLimitBytes = 32 << 20 };
        var (exit, stdout, _) = await RunToEndAsync(spec);
        Assert.Equal(0, exit.ExitCode);
        Assert.Null(exit.Signal);
        Assert.True(exit.OomKilled);
        Assert.False(exit.Successful);
        Assert.Contains("hog-status=137", stdout);
    }

    [Fact]
    public async Task ReadUsage_ReportsAboutHalfACpuSecond_WhenJobBusyLoopsOneSecondAtHalfACpu()
    {
        // Not `timeout` as PID 1: busybox timeout execs the program in its own process, and PID 1 of a
        // pid namespace ignores the SIGTERM it later sends.
        var spec = fx.Spec(fx.NewId(), "sh", "-c", "timeout 1 sh -c 'while :; do :; done'; exit 0") with { Cpus = 0.5 };
        await using var c = await fx.StartAsync(spec);
        await c.WaitAsync(new CancellationTokenSource(Deadline).Token);
        var usage = c.ReadUsage();
        // The quota caps it at 0.5 s per wall second (plus one period of slack); a busy host may give less.
        Assert.InRange(usage.CpuSeconds!.Value, 0.3, 0.65);
        Assert.True(usage.CpuThrottledPeriods > 0, $"throttled periods: {usage.CpuThrottledPeriods}");
        Assert.True(usage.CpuThrottledSeconds > 0);
        Assert.InRange(usage.CpuUserSeconds!.Value + usage.CpuSystemSeconds!.Value, 0.2, 0.75);
    }

    [Fact]
    public async Task PidsLimit_StopsForkLoop_WhenLimitIsReached()
    {
        var spec = fx.Spec(fx.NewId(), "sh", "-c", "i=0; while [ $i -lt 40 ]; do sleep 60 & i=$((i+1)); done; echo all-forked") with { PidsLimit = 16 };
        await using var c = await fx.StartAsync(spec);
        var exit = await c.WaitAsync(new CancellationTokenSource(Deadline).Token);
        var io = fx.Io(spec.Id);
        Assert.NotEqual(0, exit.ExitCode); // busybox sh gives up when fork fails
        Assert.DoesNotContain("all-forked", await StoredLog.ReadAllTextAsync(io.StdoutPath, "stdout"));
        Assert.Contains("can't fork", await StoredLog.ReadAllTextAsync(io.StderrPath, "stderr"));
        Assert.True(c.ReadUsage().PidsLimitHits > 0, $"pids.events max: {c.ReadUsage().PidsLimitHits}");
        // The pid namespace's init exited, so the kernel kills the sleeps; pids.current drops as they are reaped.
        await Poll.UntilAsync(() => c.ReadUsage().Pids == 0, Deadline, "the container's processes to be gone");
    }

    [Fact]
    public async Task KillAsync_StopsSleepWithinASecond()
    {
        await using var c = await fx.StartAsync(fx.Spec(fx.NewId(), "sleep", "600"));
        var sw = Stopwatch.StartNew();
        await c.KillAsync(CancellationToken.None);
        var exit = await c.WaitAsync(new CancellationTokenSource(TimeSpan.FromSeconds(5)).Token);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(1), $"kill took {sw.ElapsedMilliseconds} ms");
        Assert.Equal(137, exit.ExitCode);
        Assert.Equal(9, exit.Signal);
        Assert.False(exit.OomKilled);
        await c.KillAsync(CancellationToken.None); // idempotent
    }

    [Fact]
    public async Task DisposeAsync_RemovesContainerCgroupAndBundle_WhenStillRunning()
    {
        var spec = fx.Spec(fx.NewId(), "sh", "-c", "echo up; exec sleep 600") with { MemoryLimitBytes = 64 << 20 };
        var c = await fx.StartAsync(spec);
        Assert.True(Directory.Exists(fx.MemoryCgroupDir(spec.Id)));
        await Poll.UntilAsync(() => StoredLog.ReadAllTextAsync(fx.Io(spec.Id).StdoutPath, "stdout"), s => s == "up\n", TimeSpan.FromSeconds(30), "the job's output");
        await c.DisposeAsync();
        Assert.False(Directory.Exists(fx.MemoryCgroupDir(spec.Id)));
        Assert.DoesNotContain(await fx.Runtime.ListAsync(CancellationToken.None), l => l.Id == spec.Id);
        Assert.False(Directory.Exists(fx.BundleDir(spec.Id)));
        Assert.True(File.Exists(fx.Io(spec.Id).StdoutPath)); // the job's files are not the runtime's to delete
        Assert.True(Directory.Exists(Path.Combine(fx.Rootfs, "bin")));
    }

    [Fact]
    public async Task CleanupOrphansAsync_RemovesAbandonedContainerAndLeftoverCgroup()
    {
        var orphanPrefix = fx.Prefix + "orphan-";
        var spec = fx.Spec(orphanPrefix + "1", "sleep", "600");
        var abandoned = await fx.StartAsync(spec);
        var strayCgroup = Path.Combine("/sys/fs/cgroup/memory/batchrunner", orphanPrefix + "stray");
        Directory.CreateDirectory(strayCgroup);
        var other = await fx.StartAsync(fx.Spec(fx.NewId(), "sleep", "600"));
        try
        {
            // A new worker's runtime over the same state root, as after a crash.
            var fresh = new RuncRuntime(new RuncRuntimeOptions { BinaryPath = "/usr/sbin/runc", StateRoot = RuncFixture.StateRoot });
            var removed = await fresh.CleanupOrphansAsync(orphanPrefix, CancellationToken.None);

            Assert.Equal([orphanPrefix + "1", orphanPrefix + "stray"], removed);
            Assert.False(Directory.Exists(strayCgroup));
            Assert.False(Directory.Exists(fx.MemoryCgroupDir(spec.Id)));
            var listed = await fresh.ListAsync(CancellationToken.None);
            Assert.DoesNotContain(listed, l => l.Id == spec.Id);
            Assert.Contains(listed, l => l.Id == other.Id); // another prefix is untouched
            var exit = await abandoned.WaitAsync(new CancellationTokenSource(Deadline).Token);
            Assert.Equal(137, exit.ExitCode);
        }
        finally
        {
            await abandoned.DisposeAsync(); // tolerates a container that is already gone
            await other.DisposeAsync();
        }
        Assert.False(Directory.Exists(fx.BundleDir(spec.Id)));
    }

    [Fact]
    public async Task Container_HasNoCapabilitiesNoNewPrivsIsPid1AndTheFirstOomVictim()
    {
        var (exit, stdout, _) = await RunToEndAsync(fx.Spec(fx.NewId(), "sh", "-c",
            "grep -E '^(Cap|NoNewPrivs)' /proc/self/status; echo pid=$$; ls /sys/class/net | tr '\\n' ' '; echo; cat /proc/1/cmdline | tr '\\0' ' '; echo; echo oom=$(cat /proc/self/oom_score_adj)"));
        Assert.Equal(0, exit.ExitCode);
        foreach (var cap in new[] { "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb" })
            Assert.Contains($"{cap}:\t0000000000000000", stdout);
        Assert.Contains("NoNewPrivs:\t1", stdout);
        Assert.Contains("pid=1\n", stdout);
        Assert.Contains("lo \n", stdout); // new network namespace: loopback only
        Assert.Contains("sh -c grep", stdout); // /proc/1 is the job's own shell
        // Positive whatever the caller's own value: the kernel kills a job before the worker or its database.
        Assert.Contains($"oom={ContainerSpec.DefaultOomScoreAdj}\n", stdout);
    }

    [Fact]
    public async Task BindMounts_AreReadOnlyOrWritable_AsSpecified()
    {
        var id = fx.NewId();
        var inputs = Directory.CreateDirectory(Path.Combine(fx.BaseDir, "inputs-" + id)).FullName;
        var outputs = Directory.CreateDirectory(Path.Combine(fx.BaseDir, "outputs-" + id)).FullName;
        await File.WriteAllTextAsync(Path.Combine(inputs, "in.txt"), "input-data");
        var spec = fx.Spec(id, "sh", "-c", "cat /inputs/in.txt; echo; if touch /inputs/new 2>/dev/null; then echo inputs-writable; else echo inputs-readonly; fi; echo result > /outputs/out.txt")
            with { Mounts = [new BindMount(inputs, "/inputs", ReadOnly: true), new BindMount(outputs, "/outputs", ReadOnly: false)] };
        var (exit, stdout, _) = await RunToEndAsync(spec);
        Assert.Equal(0, exit.ExitCode);
        Assert.Equal("input-data\ninputs-readonly\n", stdout);
        Assert.False(File.Exists(Path.Combine(inputs, "new")));
        Assert.Equal("result\n", await File.ReadAllTextAsync(Path.Combine(outputs, "out.txt")));
    }

    [Fact]
    public async Task StartAsync_ThrowsWithRuncError_WhenProgramDoesNotExist()
    {
        var spec = fx.Spec(fx.NewId(), "/no/such/program");
        var e = await Assert.ThrowsAsync<ContainerStartException>(() => fx.StartAsync(spec));
        Assert.Contains("/no/such/program", e.Message);
        Assert.Contains("no such file or directory", e.Message);
        await AssertNothingLeftAsync(spec.Id);
    }

    [Fact]
    public async Task StartAsync_Throws_WhenRootfsDoesNotExist()
    {
        var spec = fx.Spec(fx.NewId(), "sh") with { RootfsPath = Path.Combine(fx.BaseDir, "no-rootfs") };
        var e = await Assert.ThrowsAsync<ContainerStartException>(() => fx.StartAsync(spec));
        Assert.Contains("no-rootfs", e.Message);
        await AssertNothingLeftAsync(spec.Id);
    }

    private async Task AssertNothingLeftAsync(string id)
    {
        Assert.False(Directory.Exists(fx.BundleDir(id)));
        Assert.False(Directory.Exists(fx.MemoryCgroupDir(id)));
        Assert.DoesNotContain(await fx.Runtime.ListAsync(CancellationToken.None), l => l.Id == id);
    }
}
