using BatchRunner.Runtime.Gpus;

namespace BatchRunner.Runtime;

public sealed partial record ContainerSpec
{
    /// <summary>GPUs handed to this container (devices, driver mounts, env, hooks); null: none, and no GPU device is visible.</summary>
    public GpuAssignment? Gpus { get; init; }
}
