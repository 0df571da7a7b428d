namespace BatchRunner.Core;

/// <summary>What a job's GPUs did while it ran, from periodic samples (NVML or nvidia-smi). Null fields: not measured.</summary>
public sealed record GpuUsageSummary(
    IReadOnlyList<string> Gpus,
    double? MeanUtilizationPercent,
    double? PeakUtilizationPercent,
    long? PeakMemoryBytes,
    int Samples);
