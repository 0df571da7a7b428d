using BatchRunner.Core;
using BatchRunner.Oci;
using BatchRunner.Runtime;
using BatchRunner.Runtime.Disk;
using BatchRunner.Server.Scheduling;
using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Execution;

/// <summary>
/// One attempt as its phases see it: what it runs (the job record read before the attempt, the attempt number,
/// the reservation), what can stop it, and what each phase acquired or observed so far. A phase sets its own
/// fields and reads those of the phases before it; the runner disposes nothing here itself (each phase releases
/// what it set).
/// </summary>
public sealed class AttemptContext(JobRecord job, int attempt, Reservation reservation, string containerId, string runDir, StopSignals signals)
{
    public JobRecord Job { get; } = job;
    public Guid JobId => Job.Id;
    public JobSpec Spec => Job.Spec;
    public int Attempt { get; } = attempt;
    /// <summary>The CPUs, memory and GPUs this attempt holds on the node (released by the executor after the attempt).</summary>
    public Reservation Reservation { get; } = reservation;
    /// <summary>Runtime id of this attempt's container (and cgroup): the node's prefix, the job id, the attempt.</summary>
    public string ContainerId { get; } = containerId;
    /// <summary>DATA/run/CONTAINER-ID: the job's disk (or its scratch directories) with the rootfs mount; exists only while
    /// the attempt runs. The container's bundle is on the node's state tmpfs (<see cref="Storage.DataPaths.Bundle"/>).</summary>
    public string RunDir { get; } = runDir;
    public StopSignals Signals { get; } = signals;

    /// <summary>Set by <see cref="Phases.ImagePhase"/>.</summary>
    public PreparedImage? Image { get; set; }

    /// <summary>Set by <see cref="Phases.DiskPhase"/>: the job's size-limited filesystem (null where disk limits are not
    /// enforced); released by it.</summary>
    public IDiskVolume? Disk { get; set; }

    /// <summary>Set by <see cref="Phases.DiskPhase"/> with <see cref="Disk"/>: its usage, sampled while the attempt runs.</summary>
    public DiskUsageWatch? DiskWatch { get; set; }

    /// <summary>Set by <see cref="Phases.DiskPhase"/> with <see cref="Disk"/>: the node's count of what it holds (<see cref="NodeDisk.Track"/>).</summary>
    public IDisposable? DiskCounted { get; set; }

    /// <summary>Where everything the job writes goes: the root layer's upper and work directories, /outputs and its /etc
    /// name files.
    /// The job's disk when it has one, else the run directory.</summary>
    public string ScratchDir => Disk?.Path ?? RunDir;

    /// <summary>The directory the container sees as /outputs; its contents move to the job's directory once it has exited.</summary>
    public string OutputsDir => Path.Combine(ScratchDir, OutputsDirName);

    public const string OutputsDirName = "outputs";

    /// <summary>Set by <see cref="Phases.RootfsPhase"/>; released by it.</summary>
    public IRootfs? Rootfs { get; set; }

    /// <summary>Set by <see cref="Phases.ContainerPhase"/> while the container exists; released by it.</summary>
    public IRunningContainer? Container { get; set; }

    /// <summary>Set by <see cref="Phases.ContainerPhase"/> once the container has exited and is gone.</summary>
    public ContainerRun? Run { get; set; }

    /// <summary>Set by <see cref="Phases.OutputsPhase"/>.</summary>
    public IReadOnlyList<OutputFile> Outputs { get; set; } = [];

    /// <summary>Set by <see cref="Phases.OutputsPhase"/>: what the job did with its disk (null without one).</summary>
    public DiskUsageSummary? DiskUsage { get; set; }

    /// <summary>Set by <see cref="Phases.OutputsPhase"/>: what of /outputs was not kept as it was, for the job's message; null: all of it.</summary>
    public string? OutputsNote { get; set; }
}

/// <summary>How the container ended: its exit, what (if anything) stopped it and how (<paramref name="Stop"/>: the
/// signal, the grace period, whether it had to be killed), what it used, and the last line of stderr it wrote
/// (sanitised; null when it wrote none or exited 0).</summary>
public sealed record ContainerRun(ExitResult Exit, StopCause Cause, ResourceUsage Usage, StopResult? Stop = null, string? LastStderrLine = null);
