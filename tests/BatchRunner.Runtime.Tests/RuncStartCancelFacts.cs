using BatchRunner.Runtime.Cgroups;
using BatchRunner.Runtime.Spec;

namespace BatchRunner.Runtime.Tests;

/// <summary>
/// A start cancelled at any moment (a job cancelled while its container starts) leaves nothing: no cgroup, no runc state,
/// no bundle. Found as empty cgroups without limits under /batchrunner, one or two per full test run, left by a test that
/// cancels a job just submitted: `runc run` killed after it had made the cgroups and before it had recorded its state,
/// so the `delete` that followed did not know the container.
/// </summary>
public sealed class RuncStartCancelFacts : IAsyncLifetime
{
    private readonly RuncFixture _fx = new();

    private static IReadOnlyList<string> CgroupDirs(string id) =>
        new CgroupCleaner(CgroupVersionDetector.Detect()).FindDirs(SpecBuilder.CgroupParent, n => n == id);

    [Fact]
    public async Task StartCancelled_AtAnyMomentOfRuncRun_LeavesNoCgroupStateOrBundle()
    {
        var cancelledDuringStart = 0;
        // `runc run --detach` takes 30-150 ms here: cancel it every few milliseconds of that, and once it has returned.
        for (var delayMs = 0; delayMs <= 160; delayMs += 4)
        {
            var spec = _fx.Spec(_fx.NewId(), "sleep", "60") with { MemoryLimitBytes = 64 << 20, PidsLimit = 16 };
            using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(delayMs));
            var outcome = "started";
            try
            {
                await using var started = await _fx.Runtime.StartAsync(spec, _fx.BundleDir(spec.Id), _fx.Io(spec.Id), cts.Token);
            }
            catch (OperationCanceledException) { cancelledDuringStart++; outcome = "cancelled"; }

            Assert.True(CgroupDirs(spec.Id).Count == 0, $"cancelled after {delayMs} ms: cgroups left: {string.Join(", ", CgroupDirs(spec.Id))}");
            Assert.False(Directory.Exists(Path.Combine(RuncFixture.StateRoot, spec.Id)), $"cancelled after {delayMs} ms: runc state left");
            Assert.DoesNotContain(await _fx.Runtime.ListAsync(CancellationToken.None), l => l.Id == spec.Id);
            Assert.False(Directory.Exists(_fx.BundleDir(spec.Id)),
                $"cancelled after {delayMs} ms ({outcome}): bundle left: {string.Join(", ", Directory.Exists(_fx.BundleDir(spec.Id)) ? Directory.GetFileSystemEntries(_fx.BundleDir(spec.Id)) : [])}");
        }
        Assert.True(cancelledDuringStart >= 5, $"only {cancelledDuringStart} starts were cancelled before they ended");
    }

    public Task InitializeAsync() => _fx.InitializeAsync();

    public Task DisposeAsync() => _fx.DisposeAsync();
}
