using BatchRunner.Runtime;

namespace BatchRunner.Server.Hosting;

/// <summary>
/// Whom the kernel's OOM killer should take first when the whole machine runs out of memory: job
/// containers (<see cref="ContainerSpec.DefaultOomScoreAdj"/>, positive: each has its own memory limit and
/// can be retried), then BatchRunner itself (<see cref="Server"/>), and last the embedded PostgreSQL
/// (<see cref="Storage.EmbeddedPostgres.OomScoreAdj"/>), whose loss interrupts every job's bookkeeping.
/// Without CAP_SYS_RESOURCE (root in some containers) the negative values cannot be set: BatchRunner and
/// PostgreSQL keep 0 and jobs still go first.
/// </summary>
public static partial class OomScores
{
    public const int Server = -500;

    public static void ProtectThisProcess(ILogger log)
    {
        if (!OomScore.CanLower() || !OomScore.TrySetOwn(Server))
            LogNotProtected(log, Server, OomScore.Read(Environment.ProcessId) ?? 0);
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Cannot lower this process's oom_score_adj to {Value} (needs CAP_SYS_RESOURCE); it stays {Current}, job containers still get a higher one")]
    private static partial void LogNotProtected(ILogger log, int value, int current);
}
