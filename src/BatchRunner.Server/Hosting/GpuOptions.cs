namespace BatchRunner.Server.Hosting;

/// <summary>Configuration section "BatchRunner:Gpus".</summary>
public sealed class GpuOptions
{
    /// <summary>False: this node offers no GPUs even if it has some.</summary>
    public bool Enabled { get; set; } = true;
    /// <summary>CDI spec directories (default /etc/cdi, /var/run/cdi).</summary>
    public string[]? CdiDirectories { get; set; }
    /// <summary>nvidia-smi to sample GPU metrics with when NVML cannot be loaded (default /usr/bin/nvidia-smi).</summary>
    public string? NvidiaSmiPath { get; set; }
    /// <summary>Seconds between GPU metric samples.</summary>
    public int SampleSeconds { get; set; } = 5;
}
