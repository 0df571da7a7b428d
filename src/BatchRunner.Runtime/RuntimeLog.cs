using Microsoft.Extensions.Logging;

namespace BatchRunner.Runtime;

internal static partial class RuntimeLog
{
    [LoggerMessage(EventId = 3001, Level = LogLevel.Debug, Message = "Starting container {ContainerId} with {Runtime} (bundle {BundleDir})")]
    public static partial void Starting(this ILogger logger, string containerId, string runtime, string bundleDir);

    // The container's start and exit are Debug: the executor's lines for the job's attempt ("started on NODE", "ended
    // STATE: REASON") say the same at Information, and two more lines per job were a third of a node's log.
    [LoggerMessage(EventId = 3002, Level = LogLevel.Debug, Message = "Container {ContainerId} running after {StartMs:0.0} ms")]
    public static partial void Started(this ILogger logger, string containerId, double startMs);

    [LoggerMessage(EventId = 3003, Level = LogLevel.Warning, Message = "Container {ContainerId} failed to start: {Reason}")]
    public static partial void StartFailed(this ILogger logger, string containerId, string reason);

    [LoggerMessage(EventId = 3004, Level = LogLevel.Debug, Message = "Container {ContainerId} exited with code {ExitCode} (signal {Signal}, OOM-killed {OomKilled})")]
    public static partial void Exited(this ILogger logger, string containerId, int exitCode, int? signal, bool oomKilled);

    [LoggerMessage(EventId = 3005, Level = LogLevel.Information, Message = "Killing container {ContainerId}")]
    public static partial void Killing(this ILogger logger, string containerId);

    [LoggerMessage(EventId = 3006, Level = LogLevel.Warning, Message = "Cleanup of container {ContainerId} incomplete: {Reason}")]
    public static partial void CleanupIncomplete(this ILogger logger, string containerId, string reason);

    [LoggerMessage(EventId = 3007, Level = LogLevel.Warning, Message = "Removed orphaned container {ContainerId} (status {Status})")]
    public static partial void OrphanRemoved(this ILogger logger, string containerId, string status);

    [LoggerMessage(EventId = 3008, Level = LogLevel.Warning, Message = "Removed leftover cgroup {ContainerId} unknown to the runtime")]
    public static partial void LeftoverCgroupRemoved(this ILogger logger, string containerId);

    [LoggerMessage(EventId = 3011, Level = LogLevel.Information, Message = "Sending {Signal} to container {ContainerId}")]
    public static partial void Signalling(this ILogger logger, string containerId, string signal);

    [LoggerMessage(EventId = 3009, Level = LogLevel.Debug, Message = "Container {ContainerId} deleted")]
    public static partial void Deleted(this ILogger logger, string containerId);

    [LoggerMessage(EventId = 3012, Level = LogLevel.Warning, Message = "Containers start from {Binary} itself, not from a sealed copy of it (one program start and three mounts more per container): {Reason}")]
    public static partial void SealedBinaryUnavailable(this ILogger logger, string binary, string reason);

    [LoggerMessage(EventId = 3010, Level = LogLevel.Warning, Message = "Container {ContainerId}: {Warning}")]
    public static partial void NameResolutionWarning(this ILogger logger, string containerId, string warning);
}
