namespace BatchRunner.Core;

/// <summary>
/// The states of a job, as the HTTP API v1 names them. These strings are a public contract:
/// add new ones, never rename or remove one.
/// </summary>
/// <remarks>
/// Lifecycle: queued → starting (pulling the image, preparing the rootfs) → running → one of the final
/// states. A job may also go from queued or starting straight to a final state (cancelled, or failed
/// because its image could not be pulled). A job with dependencies starts in waiting and goes to queued once
/// every condition holds, or to cancelled (dependency_failed) once one never can. An array's parent runs no
/// container: it is queued, then running once a child runs, then final once every child is.
/// </remarks>
public static class JobState
{
    public const string Queued = "queued";
    public const string Starting = "starting";
    public const string Running = "running";
    public const string Succeeded = "succeeded";
    public const string Failed = "failed";
    public const string Cancelled = "cancelled";
    /// <summary>Waiting for its dependencies (<c>dependsOn</c>) to end as its conditions ask.</summary>
    public const string Waiting = "waiting";

    public static readonly IReadOnlyList<string> All = [Queued, Starting, Running, Succeeded, Failed, Cancelled, Waiting];

    public static bool IsFinal(string state) => state is Succeeded or Failed or Cancelled;

    public static bool IsKnown(string state) => All.Contains(state);
}

/// <summary>Why a job ended the way it did (the API's <c>reason</c> field). Public contract, like <see cref="JobState"/>.</summary>
public static class FailureReason
{
    /// <summary>The container's main process exited with a non-zero code.</summary>
    public const string ExitCode = "exit_code";
    /// <summary>The kernel's OOM killer killed a process in the job's memory cgroup.</summary>
    public const string OomKilled = "oom_killed";
    /// <summary>The job ran longer than its <c>timeoutSeconds</c> and was killed.</summary>
    public const string TimedOut = "timed_out";
    /// <summary>The image could not be resolved, downloaded or unpacked.</summary>
    public const string ImagePullFailed = "image_pull_failed";
    /// <summary>The container could not be created or started (bad command, runtime error).</summary>
    public const string StartFailed = "start_failed";
    /// <summary>A user cancelled the job (state <c>cancelled</c>).</summary>
    public const string Cancelled = "cancelled";
    /// <summary>The worker running the job died or lost contact.</summary>
    public const string NodeLost = "node_lost";
    /// <summary>A dependency ended so that the job's condition on it can never hold (state <c>cancelled</c>).</summary>
    public const string DependencyFailed = "dependency_failed";
    /// <summary>An array's parent: some of its children did not succeed (the message counts them).</summary>
    public const string ChildrenFailed = "children_failed";
    /// <summary>The job's inputs could not be fetched from the node that took them (down, unreachable, or they did
    /// not match their digest): the job never starts without them. Retried like other infrastructure failures.</summary>
    public const string InputsUnavailable = "inputs_unavailable";
    /// <summary>The job wrote more than its <c>resources.disk</c> (its root layer and /outputs together), or created
    /// more files than its disk holds: writes failed with ENOSPC. Also when its process caught the error and exited 0.</summary>
    public const string DiskQuotaExceeded = "disk_quota_exceeded";
}
