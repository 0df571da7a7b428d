using BatchRunner.Core;
using BatchRunner.Oci.Store;
using BatchRunner.Server.Hosting;
using BatchRunner.Server.Storage;
using Microsoft.Extensions.Options;

namespace BatchRunner.Server.Execution;

/// <summary>
/// Keeps this node's image cache within <see cref="BatchRunnerOptions.ImageCacheBudget"/>: least recently
/// used images go first, never one that a queued, starting or running job uses (their digests are in the
/// database) nor one used in the last <see cref="RecentUse"/> (a job may be between its pull and the
/// moment it records the digest).
/// </summary>
public sealed partial class ImageCacheCollector(
    ImageStore images,
    JobStore jobs,
    IOptions<BatchRunnerOptions> options,
    ILogger<ImageCacheCollector> log) : BackgroundService
{
    public static readonly TimeSpan RecentUse = TimeSpan.FromMinutes(10);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        if (options.Value.ImageCacheBudgetBytes() is not { } budget) return;
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(Math.Max(1, options.Value.ImageCacheCheckSeconds)));
        do
        {
            try { await CollectAsync(budget, stoppingToken); }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested) { return; }
            catch (Exception e) { LogFailed(log, e); }
        } while (await timer.WaitForNextTickAsync(stoppingToken).AsTask().ContinueWith(t => !t.IsCanceled && t.Result));
    }

    public async Task<GcResult> CollectAsync(long budgetBytes, CancellationToken ct)
    {
        var inUse = await jobs.InUseImageDigestsAsync(ct);
        var now = DateTime.UtcNow;
        foreach (var image in images.List().Where(i => now - i.LastUsedUtc < RecentUse)) inUse.Add(image.ManifestDigest);
        var result = await images.GarbageCollectAsync(budgetBytes, inUse, ct);
        if (result.RemovedImages.Count > 0)
            LogCollected(log, result.RemovedImages.Count, Quantity.Human(result.BytesBefore), Quantity.Human(result.BytesAfter), Quantity.Human(budgetBytes));
        return result;
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Image cache: removed {Images} images, {Before} → {After} (budget {Budget})")]
    private static partial void LogCollected(ILogger log, int images, string before, string after, string budget);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Image cache garbage collection failed")]
    private static partial void LogFailed(ILogger log, Exception e);
}
