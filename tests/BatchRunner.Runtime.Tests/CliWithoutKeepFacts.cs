using BatchRunner.Testing;

namespace BatchRunner.Runtime.Tests;

/// <summary>
/// The driver needs nothing beyond the OCI CLI that crun 1.8.1 (Debian 12) has: no `run --keep`. A runc
/// wrapper that refuses --keep the way crun 1.8.1 does stands in for crun, which refuses this hybrid
/// host's cgroups (crun itself is checked on a pure v2 host by gpu-check's `crun` step). Exit codes,
/// signals, OOM kills of a shell's child and final usage must all still come through.
/// </summary>
public sealed class CliWithoutKeepFacts : IAsyncLifetime
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);
    private readonly RuncFixture _fx = new();
    private readonly RuncRuntime _runtime;
    private readonly string _wrapper;

    public CliWithoutKeepFacts()
    {
        _wrapper = _fx.RuncWrapper("runc-without-keep", """
            for a in "$@"; do
              if [ "$a" = "--keep" ]; then echo "crun: unrecognized option '--keep'" >&2; exit 1; fi
            done
            """);
        _runtime = new RuncRuntime(new RuncRuntimeOptions { BinaryPath = _wrapper, StateRoot = RuncFixture.StateRoot });
    }

    private Task<IRunningContainer> StartAsync(ContainerSpec spec) =>
        _runtime.StartAsync(spec, _fx.BundleDir(spec.Id), _fx.Io(spec.Id), CancellationToken.None);

    [Fact]
    public async Task ExitCodeAndOomOfShellChild_AreReported_WithoutRunKeep()
    {
        // One process allocates (dd's 100 MiB buffer), so only it meets the limit: with a pipe (head | tail) the writer's
        // pipe pages could meet it too while the killed reader's memory was not yet freed, and the kernel then took the
        // shell (PID 1) as a second victim.
        var spec = _fx.Spec(_fx.NewId(), "sh", "-c",
            "sh -c 'echo 1000 >/proc/self/oom_score_adj; exec dd if=/dev/zero of=/dev/null bs=100M count=1'; exit 0") with { MemoryLimitBytes = 32 << 20 };
        await using var c = await StartAsync(spec);
        var exit = await c.WaitAsync(new CancellationTokenSource(Deadline).Token);
        Assert.Equal(0, exit.ExitCode);
        Assert.Null(exit.Signal);
        Assert.True(exit.OomKilled);
        var usage = c.ReadUsage();
        Assert.Equal(1, usage.OomKills);
        Assert.InRange(usage.MaxMemoryBytes!.Value, 16L << 20, 32L << 20);
    }

    [Fact]
    public async Task ExitStatusAndSignal_AreTheInitProcesses()
    {
        await using (var c = await StartAsync(_fx.Spec(_fx.NewId(), "sh", "-c", "exit 42")))
        {
            var exit = await c.WaitAsync(new CancellationTokenSource(Deadline).Token);
            Assert.Equal(42, exit.ExitCode);
            Assert.Null(exit.Signal);
        }
        await using (var c = await StartAsync(_fx.Spec(_fx.NewId(), "sleep", "600")))
        {
            await c.KillAsync(CancellationToken.None);
            var exit = await c.WaitAsync(new CancellationTokenSource(Deadline).Token);
            Assert.Equal(137, exit.ExitCode);
            Assert.Equal(9, exit.Signal);
            Assert.False(exit.OomKilled);
        }
    }

    [Fact]
    public async Task ContainerInit_IsReapedByUs_AndLeavesNoZombie()
    {
        var id = _fx.NewId();
        int pid;
        await using (var c = await StartAsync(_fx.Spec(id, "sleep", "600")))
        {
            pid = (await _runtime.ListAsync(CancellationToken.None)).Single(l => l.Id == id).Pid;
            // Once `run --detach` has exited, this process (a child subreaper) is the init's parent.
            Assert.Equal(Environment.ProcessId, ParentOf(pid));
        }
        // Disposal killed it, read its status and reaped it: no zombie of ours is left with that pid.
        Assert.NotEqual(Environment.ProcessId, ParentOf(pid));
    }

    [Fact]
    public async Task StartFailure_CarriesTheRuntimesError()
    {
        var e = await Assert.ThrowsAsync<ContainerStartException>(() => StartAsync(_fx.Spec(_fx.NewId(), "/no/such/program")));
        Assert.Contains("/no/such/program", e.Message);
    }

    private static int? ParentOf(int pid) => ProcStat.Read(pid)?.Ppid;

    public Task InitializeAsync() => _fx.InitializeAsync();

    public async Task DisposeAsync()
    {
        await _runtime.CleanupOrphansAsync(_fx.Prefix, CancellationToken.None);
        await _fx.DisposeAsync();
    }
}
