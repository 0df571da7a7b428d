using BatchRunner.Runtime.Gpus;
using BatchRunner.Testing;

namespace BatchRunner.Runtime.Tests.Gpus;

/// <summary>Plays back scripted readings, one list per call (the last one repeats).</summary>
internal sealed class ScriptedGpuSource(params IReadOnlyList<GpuSample>[] rounds) : IGpuMetricsSource
{
    private int _calls;
    public string Name => "scripted";
    public int Calls => Volatile.Read(ref _calls);

    public Task<IReadOnlyList<GpuSample>> SampleAsync(IReadOnlyCollection<string>? uuids, CancellationToken ct)
    {
        var i = Interlocked.Increment(ref _calls) - 1;
        var round = rounds[Math.Min(i, rounds.Length - 1)];
        return Task.FromResult<IReadOnlyList<GpuSample>>(uuids is null ? round : round.Where(s => uuids.Contains(s.Uuid)).ToList());
    }
}

public sealed class GpuUsageSamplerFacts
{
    private static GpuSample S(string uuid, double util, long memMiB) =>
        new(uuid, util, memMiB << 20, 80L << 30, 50, 300, DateTimeOffset.UnixEpoch);

    [Fact]
    public void Accumulator_KeepsMeanAndPeaks_OfTheJobsGpusOnly()
    {
        var acc = new GpuUsageAccumulator(["GPU-a", "GPU-b"]);
        acc.Add([S("GPU-a", 10, 100), S("GPU-b", 30, 500), S("GPU-other", 100, 9000)]);
        acc.Add([S("GPU-a", 90, 700), S("GPU-b", 70, 200)]);
        acc.Add([S("GPU-other", 100, 9000)]); // not this job's: not a sample of it
        var u = acc.Snapshot();
        Assert.Equal(["GPU-a", "GPU-b"], u.Gpus);
        Assert.Equal((50.0, 90.0, 700L << 20, 2), (u.MeanUtilizationPercent!.Value, u.PeakUtilizationPercent!.Value, u.PeakMemoryBytes!.Value, u.Samples));
    }

    [Fact]
    public void Accumulator_ReportsNulls_WhenNoSample()
    {
        var u = new GpuUsageAccumulator(["GPU-a"]).Snapshot();
        Assert.Equal((null, null, null, 0), (u.MeanUtilizationPercent, u.PeakUtilizationPercent, u.PeakMemoryBytes, u.Samples));
    }

    [Fact]
    public async Task Sampler_SamplesUntilStopped_AndKeepsGoingAfterAFailure()
    {
        var source = new FailingOnceSource(new ScriptedGpuSource([S("GPU-a", 20, 100)], [S("GPU-a", 60, 300)]));
        var errors = 0;
        var sampler = GpuUsageSampler.Start(source, ["GPU-a"], TimeSpan.FromMilliseconds(10), onError: _ => Interlocked.Increment(ref errors));
        await Poll.UntilAsync(() => sampler.Current.Samples >= 3, TimeSpan.FromSeconds(10), "three samples");
        var usage = await sampler.StopAsync();
        Assert.Equal(1, errors);
        Assert.Equal(60, usage.PeakUtilizationPercent);
        Assert.Equal(300L << 20, usage.PeakMemoryBytes);
        Assert.InRange(usage.MeanUtilizationPercent!.Value, 40, 60);
        var calls = source.Calls;
        await Task.Delay(50);
        Assert.Equal(calls, source.Calls); // stopped means stopped
    }

    private sealed class FailingOnceSource(ScriptedGpuSource inner) : IGpuMetricsSource
    {
        private int _calls;
        public string Name => "failing-once";
        public int Calls => Volatile.Read(ref _calls);
        public Task<IReadOnlyList<GpuSample>> SampleAsync(IReadOnlyCollection<string>? uuids, CancellationToken ct) =>
            Interlocked.Increment(ref _calls) == 2 ? throw new InvalidOperationException("nvml hiccup") : inner.SampleAsync(uuids, ct);
    }

    [Fact]
    public void NvmlMetricsSource_TryCreate_ReturnsNullWithReason_WhenLibraryIsMissing()
    {
        Assert.Null(NvmlMetricsSource.TryCreate(out var error, "libnvidia-ml-does-not-exist.so.1"));
        Assert.Contains("could not be loaded", error);
    }
}
