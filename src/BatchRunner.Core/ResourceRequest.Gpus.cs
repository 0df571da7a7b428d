namespace BatchRunner.Core;

public sealed partial record ResourceRequest
{
    /// <summary>Whole GPUs the job gets for itself (0: none, and no GPU device is visible to it).</summary>
    public int Gpus { get; init; }
    /// <summary>Case-insensitive part of the GPU model name ("H100" matches "NVIDIA H100 80GB HBM3"); null: any model.</summary>
    public string? GpuModel { get; init; }
}

public sealed partial record ResourceSubmission
{
    public int? Gpus { get; init; }
    public string? GpuModel { get; init; }
}

public static class GpuLimits
{
    /// <summary>More than any one node holds today; the cluster's real maximum is checked at admission.</summary>
    public const int MaxGpusPerJob = 64;
    public const int MaxGpuModelLength = 128;
}
