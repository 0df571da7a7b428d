namespace BatchRunner.Cli;

/// <summary>
/// Exit codes. <c>run</c> (and <c>submit --wait/--follow</c>) exit with the job's own code, as <c>docker run</c> does; the
/// codes a job can never give itself are chosen as Docker and coreutils' <c>timeout</c> use them.
/// </summary>
internal static class ExitCodes
{
    public const int Success = 0;
    /// <summary>The CLI could not do what was asked: server unreachable, key refused, spec invalid, job unknown.</summary>
    public const int Error = 1;
    /// <summary>The command line itself is wrong (unknown option, missing argument, unreadable job file).</summary>
    public const int Usage = 2;
    /// <summary>The job ran past its timeout (as <c>timeout(1)</c>).</summary>
    public const int TimedOut = 124;
    /// <summary>The job never ran: the image could not be pulled or the container not started, or the server refused it (as <c>docker run</c>).</summary>
    public const int CouldNotStart = 125;
    /// <summary>The job was cancelled (128 + SIGINT, what a shell reports for Ctrl-C).</summary>
    public const int Cancelled = 130;
    /// <summary>The kernel's OOM killer ended the job (128 + SIGKILL, as <c>docker run</c>).</summary>
    public const int OomKilled = 137;

    /// <summary>The exit code that stands for a job in a final state.</summary>
    public static int ForJob(JobView job) => job.State switch
    {
        "succeeded" => Success,
        "cancelled" => Cancelled,
        _ => job.Reason switch
        {
            "oom_killed" => OomKilled,
            "timed_out" => TimedOut,
            "image_pull_failed" or "start_failed" or "inputs_unavailable" => CouldNotStart,
            // exit_code, and reasons this CLI does not know yet (node_lost, disk_quota_exceeded, ...): the job's own code when it has a failing one.
            _ => job.ExitCode is { } code and not 0 ? code : Error,
        },
    };
}
