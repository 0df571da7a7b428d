namespace BatchRunner.Server.Storage;

/// <summary>
/// At start-up, removes uploads that a crashed API process was still receiving, and inputs a crashed worker was
/// still unpacking (staging directories and spooled archives). Uploads of a live request are never older than a few minutes, so anything
/// older than <see cref="MinAge"/> is a leftover even when several API processes share the data dir.
/// </summary>
public sealed partial class InputStagingSweeper(DataPaths paths, ILogger<InputStagingSweeper> log) : IHostedService
{
    public static readonly TimeSpan MinAge = TimeSpan.FromMinutes(30);

    public Task StartAsync(CancellationToken ct)
    {
        if (!Directory.Exists(paths.InputsStaging)) return Task.CompletedTask;
        foreach (var entry in new DirectoryInfo(paths.InputsStaging).EnumerateFileSystemInfos())
        {
            if (DateTime.UtcNow - entry.LastWriteTimeUtc < MinAge) continue;
            try
            {
                if (entry is DirectoryInfo d) d.Delete(recursive: true); else entry.Delete();
                LogRemoved(log, entry.FullName);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { LogFailed(log, entry.FullName, e.Message); }
        }
        return Task.CompletedTask;
    }

    public Task StopAsync(CancellationToken ct) => Task.CompletedTask;

    [LoggerMessage(Level = LogLevel.Warning, Message = "Removed leftover input upload {Path}")]
    private static partial void LogRemoved(ILogger log, string path);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not remove leftover input upload {Path}: {Reason}")]
    private static partial void LogFailed(ILogger log, string path, string reason);
}
