using BatchRunner.Runtime.Spec;

namespace BatchRunner.Runtime.Tests;

/// <summary>
/// How the driver starts runc for a container, seen from hooks of a real container: a createRuntime hook runs as a child
/// of `runc run` on the host, a startContainer hook as a child of the container's runc init (its pid 1) in the container.
/// runc runs from its sealed copy (SealedBinary), so its init does not re-execute itself from a bind mount of the file,
/// and its `run` with one Go scheduler slot.
/// </summary>
public sealed class RuncLaunchFacts : IAsyncLifetime
{
    private const string Runc = "/usr/sbin/runc";
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);
    private readonly RuncFixture _fx = new();

    // Runs `true` with a createRuntime hook running HOSTSCRIPT and a startContainer hook running CONTAINERSCRIPT, which
    // may write to /outputs: returns that directory on the host.
    private async Task<string> RunWithHooksAsync(RuncRuntimeOptions options, string hostScript, string containerScript)
    {
        var outputs = Path.Combine(_fx.BaseDir, "outputs-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(outputs);
        SpecOpt hooks = s =>
        {
            s.Hooks ??= new HooksSpec();
            s.Hooks.CreateRuntime = [new HookSpec { Path = "/bin/sh", Args = ["sh", "-c", hostScript.Replace("OUT", outputs)] }];
            s.Hooks.StartContainer = [new HookSpec { Path = "/bin/sh", Args = ["sh", "-c", containerScript] }];
        };
        var runtime = new RuncRuntime(options with { ExtraSpecOptions = [hooks] });
        var spec = _fx.Spec(_fx.NewId(), "true") with { Mounts = [new BindMount(outputs, "/outputs", ReadOnly: false)] };
        await using (var c = await runtime.StartAsync(spec, _fx.BundleDir(spec.Id), _fx.Io(spec.Id), CancellationToken.None))
            Assert.Equal(0, (await c.WaitAsync(new CancellationTokenSource(Deadline).Token)).ExitCode);
        return outputs;
    }

    [Theory]
    [InlineData(true, "/memfd:runc (deleted)", "/memfd:runc (deleted)")]
    [InlineData(false, Runc, null)]
    public async Task RuncAndItsInit_RunFromTheSealedCopy(bool sealedCopy, string runExe, string? initExe)
    {
        var outputs = await RunWithHooksAsync(
            new RuncRuntimeOptions { BinaryPath = Runc, StateRoot = RuncFixture.StateRoot, RunFromSealedCopy = sealedCopy },
            "readlink /proc/$PPID/exe > OUT/run-exe", "readlink /proc/1/exe > /outputs/init-exe");

        Assert.Equal(runExe, File.ReadAllText(Path.Combine(outputs, "run-exe")).Trim());
        var init = File.ReadAllText(Path.Combine(outputs, "init-exe")).Trim();
        if (initExe is not null) Assert.Equal(initExe, init);
        else Assert.DoesNotContain("memfd", init); // runc's own re-execution, from a bind mount of the file it removed at once
    }

    [Theory]
    [InlineData(1, "GOMAXPROCS=1")]
    [InlineData(null, "")]
    public async Task RuncRun_HasOneGoSchedulerSlot_UnlessTheEnvironmentSaysOtherwise(int? goMaxProcs, string expected)
    {
        Assert.Null(Environment.GetEnvironmentVariable("GOMAXPROCS")); // the test host's own would win
        var outputs = await RunWithHooksAsync(
            new RuncRuntimeOptions { BinaryPath = Runc, StateRoot = RuncFixture.StateRoot, GoMaxProcs = goMaxProcs },
            "tr '\\0' '\\n' < /proc/$PPID/environ | grep '^GOMAXPROCS=' > OUT/run-env; true", "true");

        Assert.Equal(expected, File.ReadAllText(Path.Combine(outputs, "run-env")).Trim());
    }

    public Task InitializeAsync() => _fx.InitializeAsync();

    public Task DisposeAsync() => _fx.DisposeAsync();
}
