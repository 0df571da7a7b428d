namespace BatchRunner.Runtime.Gpus;

/// <summary>GPU metrics from `nvidia-smi --query-gpu` (one process per sample: fine every few seconds, use NVML for more).</summary>
public sealed class NvidiaSmiMetricsSource(string nvidiaSmiPath = "/usr/bin/nvidia-smi", TimeProvider? time = null) : IGpuMetricsSource
{
    public const string Query = "--query-gpu=uuid,utilization.gpu,memory.used,memory.total,temperature.gpu,power.draw";
    private readonly TimeProvider _time = time ?? TimeProvider.System;

    public string Name => "nvidia-smi";

    public async Task<IReadOnlyList<GpuSample>> SampleAsync(IReadOnlyCollection<string>? uuids, CancellationToken ct)
    {
        var r = await Command.RunAsync(nvidiaSmiPath, [Query, "--format=csv,noheader,nounits"], TimeSpan.FromSeconds(15), ct);
        if (!r.Ok) throw new InvalidOperationException($"{nvidiaSmiPath} failed (exit {r.ExitCode}): {r.Message}");
        var all = Parse(r.Stdout, _time.GetUtcNow());
        return uuids is null ? all : all.Where(s => uuids.Contains(s.Uuid)).ToList();
    }

    /// <summary>Parses the CSV of <see cref="Query"/> (memory in MiB, power in W); "[N/A]" fields are null.</summary>
    public static IReadOnlyList<GpuSample> Parse(string csv, DateTimeOffset at)
    {
        var list = new List<GpuSample>();
        foreach (var raw in csv.Split('\n'))
        {
            var line = raw.Trim();
            if (line.Length == 0) continue;
            var f = line.Split(',').Select(x => x.Trim()).ToArray();
            if (f.Length < 6 || !f[0].StartsWith("GPU-", StringComparison.Ordinal))
                throw new FormatException($"unexpected nvidia-smi line \"{line}\"");
            static long? MiB(string s) => NvidiaDiscovery.ParseSmiNumber(s) is { } v ? (long)(v * 1024 * 1024) : null;
            list.Add(new GpuSample(f[0], NvidiaDiscovery.ParseSmiNumber(f[1]), MiB(f[2]), MiB(f[3]),
                NvidiaDiscovery.ParseSmiNumber(f[4]), NvidiaDiscovery.ParseSmiNumber(f[5]), at));
        }
        return list;
    }
}
