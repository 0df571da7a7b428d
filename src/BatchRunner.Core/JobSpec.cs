namespace BatchRunner.Core;

/// <summary>
/// A validated, normalised job specification: what the worker needs to run the job. Built from the
/// API's request by <see cref="JobSpecValidator"/>; stored as JSON with the job and never changed after
/// submission.
/// </summary>
public sealed partial record JobSpec
{
    public string? Name { get; init; }
    /// <summary>The image reference as the user wrote it (normalised by the image layer when pulled).</summary>
    public required string Image { get; init; }
    /// <summary>Replaces the image's entrypoint and cmd when set.</summary>
    public IReadOnlyList<string>? Command { get; init; }
    /// <summary>Replaces the image's cmd (kept after its entrypoint, or after <see cref="Command"/>).</summary>
    public IReadOnlyList<string>? Args { get; init; }
    public IReadOnlyDictionary<string, string> Env { get; init; } = new Dictionary<string, string>();
    public string? WorkingDir { get; init; }
    /// <summary>"uid", "uid:gid", "name" or "name:group"; resolved against the image's /etc/passwd.</summary>
    public string? User { get; init; }
    public required ResourceRequest Resources { get; init; }
    public int TimeoutSeconds { get; init; }
    public string Queue { get; init; } = JobDefaults.Queue;
    public IReadOnlyDictionary<string, string> Labels { get; init; } = new Dictionary<string, string>();
    /// <summary>When the worker contacts the registry: <see cref="ImagePullPolicy"/>.</summary>
    public string PullPolicy { get; init; } = ImagePullPolicy.IfNotPresent;
    /// <summary>
    /// How long a job asked to stop (cancel, timeout, a worker's shutdown once its own grace ran out) has between the
    /// stop signal (SIGTERM, or the image's StopSignal) and SIGKILL, as Kubernetes' terminationGracePeriodSeconds and
    /// Slurm's KillWait. Filled in at submission with the node's default; null only in jobs stored before it existed.
    /// </summary>
    public int? StopGraceSeconds { get; init; }
}

/// <summary>Per-job image pull policy, as Kubernetes names it.</summary>
public static class ImagePullPolicy
{
    public const string Always = "always";
    public const string IfNotPresent = "ifNotPresent";
    public const string Never = "never";
    public static readonly IReadOnlyList<string> All = [Always, IfNotPresent, Never];
}

/// <summary>Resources a job asks for; they become cgroup limits of its container.</summary>
public sealed partial record ResourceRequest
{
    /// <summary>CPUs, may be fractional: 0.5 = half a CPU's time per period (CFS quota).</summary>
    public double Cpus { get; init; }
    public long MemoryBytes { get; init; }
    public int Pids { get; init; }
}

public static class JobDefaults
{
    public const string Queue = "default";
    public const double Cpus = 1.0;
    public const long MemoryBytes = 512L * 1024 * 1024;
    public const int Pids = 1024;
    /// <summary>The largest pids limit a job may ask for: far above what a batch job forks, far below the kernel's
    /// pid_max on 64-bit hosts (4194304), so that one job cannot claim the host's whole pid space.</summary>
    public const int MaxPids = 65536;
    public const int TimeoutSeconds = 3600;
    public const int MaxTimeoutSeconds = 7 * 24 * 3600;
    /// <summary>The stop grace period when neither the job nor the node says otherwise (Docker's `docker stop`, 10 s).</summary>
    public const int StopGraceSeconds = 10;
    /// <summary>The highest stop grace period any node accepts (a node's own maximum may be lower).</summary>
    public const int MaxStopGraceSeconds = 3600;
    public const double MaxCpus = 1024;
    /// <summary>Below this a job cannot even start a shell reliably.</summary>
    public const long MinMemoryBytes = 4L * 1024 * 1024;
}
