using BatchRunner.Runtime.Spec;

namespace BatchRunner.Runtime.Gpus;

/// <summary>
/// The GPUs one container gets, with the node's common edits: plain data a <see cref="ContainerSpec"/> can carry
/// (proposed field <c>ContainerSpec.Gpus</c>) and the runtime turns into <see cref="GpuSpecOpts.WithGpus(GpuAssignment)"/>.
/// </summary>
public sealed record GpuAssignment(IReadOnlyList<Gpu> Devices, GpuContainerEdits Common, GpuInjectionOptions? Options = null);

public static partial class GpuSpecOpts
{
    public static SpecOpt WithGpus(GpuAssignment assignment) => WithGpus(assignment.Devices, assignment.Common, assignment.Options);
}
