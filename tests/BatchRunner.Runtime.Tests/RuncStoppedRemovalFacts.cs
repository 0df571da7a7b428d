using BatchRunner.Runtime.Cgroups;
using BatchRunner.Runtime.Spec;

namespace BatchRunner.Runtime.Tests;

/// <summary>
/// A container whose init has exited is removed without `runc delete` (a Go process of about 7 ms per job) where that is
/// all `delete` would do: its cgroups in every hierarchy and its state go, and `list` no longer knows it. Where `delete`
/// does more (poststop hooks) or the state holds what we do not know, runc's own `delete` still runs. A runc wrapper
/// records the subcommands it is given.
/// </summary>
public sealed class RuncStoppedRemovalFacts : IAsyncLifetime
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);
    private readonly RuncFixture _fx = new();
    private readonly string _calls;
    private readonly string _wrapper;

    public RuncStoppedRemovalFacts()
    {
        _calls = Path.Combine(_fx.BaseDir, "runc-calls");
        _wrapper = _fx.RuncWrapper("runc-recording", $"echo \"$*\" >> {_calls}");
    }

    private RuncRuntime Runtime(params SpecOpt[] extra) =>
        new(new RuncRuntimeOptions { BinaryPath = _wrapper, StateRoot = RuncFixture.StateRoot, ExtraSpecOptions = extra });

    private IReadOnlyList<string> Calls(string id) =>
        File.Exists(_calls) ? File.ReadAllLines(_calls).Where(l => l.EndsWith(" " + id, StringComparison.Ordinal)).ToList() : [];

    private static IReadOnlyList<string> CgroupDirs(string id) =>
        new CgroupCleaner(CgroupVersionDetector.Detect()).FindDirs(SpecBuilder.CgroupParent, n => n == id);

    private async Task<IRunningContainer> RunToExitAsync(RuncRuntime runtime, ContainerSpec spec)
    {
        var c = await runtime.StartAsync(spec, _fx.BundleDir(spec.Id), _fx.Io(spec.Id), CancellationToken.None);
        var exit = await c.WaitAsync(new CancellationTokenSource(Deadline).Token);
        Assert.Equal(0, exit.ExitCode);
        return c;
    }

    [Fact]
    public async Task DisposeAsync_RemovesCgroupsAndStateWithoutRuncDelete_WhenInitHasExited()
    {
        var runtime = Runtime();
        var spec = _fx.Spec(_fx.NewId(), "true") with { MemoryLimitBytes = 64 << 20, PidsLimit = 16 };
        var c = await RunToExitAsync(runtime, spec);
        Assert.NotEmpty(CgroupDirs(spec.Id)); // kept until disposal: the OOM count and usage are read from it
        await c.DisposeAsync();

        Assert.DoesNotContain(Calls(spec.Id), l => l.Contains(" delete ", StringComparison.Ordinal));
        Assert.Empty(CgroupDirs(spec.Id));
        Assert.False(Directory.Exists(Path.Combine(RuncFixture.StateRoot, spec.Id)));
        Assert.DoesNotContain(await runtime.ListAsync(CancellationToken.None), l => l.Id == spec.Id);
        Assert.False(Directory.Exists(_fx.BundleDir(spec.Id)));
    }

    [Fact]
    public async Task DisposeAsync_RunsRuncDelete_WhenTheStateHoldsAnUnknownFile()
    {
        var runtime = Runtime();
        var spec = _fx.Spec(_fx.NewId(), "true");
        var c = await RunToExitAsync(runtime, spec);
        var stateDir = Path.Combine(RuncFixture.StateRoot, spec.Id);
        File.WriteAllText(Path.Combine(stateDir, "not-ours"), "");
        await c.DisposeAsync();

        Assert.Contains(Calls(spec.Id), l => l.Contains(" delete --force ", StringComparison.Ordinal));
        Assert.False(Directory.Exists(stateDir));
        Assert.Empty(CgroupDirs(spec.Id));
    }

    [Fact]
    public async Task DisposeAsync_RunsRuncDeleteAndItsPoststopHook_WhenTheSpecHasOne()
    {
        var marker = Path.Combine(_fx.BaseDir, "poststop-" + Guid.NewGuid().ToString("N"));
        var runtime = Runtime(s => (s.Hooks ??= new HooksSpec()).Poststop = [new HookSpec { Path = "/bin/sh", Args = ["sh", "-c", $"touch {marker}"] }]);
        var spec = _fx.Spec(_fx.NewId(), "true");
        var c = await RunToExitAsync(runtime, spec);
        Assert.False(File.Exists(marker));
        await c.DisposeAsync();

        Assert.Contains(Calls(spec.Id), l => l.Contains(" delete --force ", StringComparison.Ordinal));
        Assert.True(File.Exists(marker));
        Assert.False(Directory.Exists(Path.Combine(RuncFixture.StateRoot, spec.Id)));
        Assert.Empty(CgroupDirs(spec.Id));
    }

    [Fact]
    public async Task CleanerRemoveAsync_KillsWhatStillRunsInTheCgroups_ThenRemovesThem()
    {
        // The cleaner first tries each cgroup with a plain rmdir, which the kernel refuses while a process is in it: then it
        // must still kill, wait and remove, in every hierarchy.
        var runtime = Runtime();
        var spec = _fx.Spec(_fx.NewId(), "sleep", "600") with { PidsLimit = 16 };
        await using var c = await runtime.StartAsync(spec, _fx.BundleDir(spec.Id), _fx.Io(spec.Id), CancellationToken.None);
        Assert.NotEmpty(CgroupDirs(spec.Id));

        await new CgroupCleaner(CgroupVersionDetector.Detect()).RemoveAsync(SpecBuilder.CgroupParent, spec.Id, TimeSpan.FromSeconds(10), CancellationToken.None);

        Assert.Empty(CgroupDirs(spec.Id));
        var exit = await c.WaitAsync(new CancellationTokenSource(Deadline).Token);
        Assert.Equal(9, exit.Signal);
    }

    public Task InitializeAsync() => _fx.InitializeAsync();

    public Task DisposeAsync() => _fx.DisposeAsync();
}
