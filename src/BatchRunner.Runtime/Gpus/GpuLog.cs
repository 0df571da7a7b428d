using Microsoft.Extensions.Logging;

namespace BatchRunner.Runtime.Gpus;

internal static partial class GpuLog
{
    [LoggerMessage(EventId = 3101, Level = LogLevel.Information, Message = "GPU inventory: {Count} GPU(s) from {Source}: {Gpus}")]
    public static partial void Discovered(ILogger logger, int count, string source, string gpus);

    [LoggerMessage(EventId = 3102, Level = LogLevel.Warning, Message = "GPU discovery: {Warning}")]
    public static partial void DiscoveryWarning(ILogger logger, string warning);

    [LoggerMessage(EventId = 3103, Level = LogLevel.Warning, Message = "GPU metrics from {Source} failed: {Reason}")]
    public static partial void SampleFailed(ILogger logger, string source, string reason);
}
