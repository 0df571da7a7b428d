namespace BatchRunner.Runtime.Gpus;

public static class GpuMetricsSources
{
    /// <summary>NVML when libnvidia-ml.so.1 loads, else nvidia-smi when installed, else null (no NVIDIA driver).
    /// <paramref name="why"/> says what was chosen or why nothing was.</summary>
    public static IGpuMetricsSource? Create(out string why, string nvidiaSmiPath = "/usr/bin/nvidia-smi")
    {
        if (NvmlMetricsSource.TryCreate(out var error) is { } nvml)
        {
            why = "NVML (libnvidia-ml.so.1)";
            return nvml;
        }
        if (File.Exists(nvidiaSmiPath))
        {
            why = $"{nvidiaSmiPath} (NVML unavailable: {error})";
            return new NvidiaSmiMetricsSource(nvidiaSmiPath);
        }
        why = $"none: {error}; {nvidiaSmiPath} not found";
        return null;
    }
}
