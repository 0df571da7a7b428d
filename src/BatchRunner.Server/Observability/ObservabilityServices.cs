using System.Runtime.CompilerServices;
using BatchRunner.Server.Hosting;
using BatchRunner.Server.Storage;
using Hangfire;

namespace BatchRunner.Server.Observability;

public static class ObservabilityServices
{
    /// <summary>
    /// The metrics side of a BatchRunner host: <see cref="JobTelemetry"/> for the executor, and the scrape-time
    /// collectors (job counts, Hangfire queues, image cache size). The node's capacity and allocation series
    /// come from Scheduling/NodeReservations. HTTP request
    /// metrics and the .NET runtime series come from prometheus-net (UseHttpMetrics, its default collectors).
    /// </summary>
    public static IServiceCollection AddBatchRunnerObservability(this IServiceCollection services, BatchRunnerOptions options)
    {
        services.AddSingleton<JobTelemetry>();
        services.AddHostedService(sp => new ScrapeCollectors(sp, options));
        services.AddSingleton(sp => new DiskUsagePublisher(sp.GetRequiredService<DataPaths>(), options.NodeName, sp.GetRequiredService<ILogger<DiskUsagePublisher>>()));
        services.AddHostedService(sp => sp.GetRequiredService<DiskUsagePublisher>());
        return services;
    }

    /// <summary>Registers the scrape hooks while the host runs; a stopped host stops contributing.</summary>
    private sealed class ScrapeCollectors(IServiceProvider sp, BatchRunnerOptions options) : IHostedService
    {
        private readonly List<IDisposable> _hooks = [];

        public Task StartAsync(CancellationToken ct)
        {
            var log = sp.GetRequiredService<ILoggerFactory>().CreateLogger("BatchRunner.Server.Observability.Metrics");
            // Declare every family now, so /metrics lists them (HELP/TYPE) before their first series.
            RuntimeHelpers.RunClassConstructor(typeof(BatchRunnerMetrics).TypeHandle);
            RuntimeHelpers.RunClassConstructor(typeof(ContainerMetrics).TypeHandle);
            RuntimeHelpers.RunClassConstructor(typeof(NodeMetrics).TypeHandle);

            var queues = options.Queues.Distinct(StringComparer.Ordinal).ToArray();
            var jobs = new JobCountsCollector(sp.GetRequiredService<JobStore>(), queues);
            var hangfire = new HangfireCollector(sp.GetRequiredService<JobStorage>(), queues);
            _hooks.Add(StorageGauges.Add(jobs, hangfire, new ArrayProgressCollector(sp.GetRequiredService<JobStore>()), log));
            if (sp.GetService<EmbeddedPostgres>() is { } embedded)
            {
                EmbeddedPostgresMetrics.Publish(embedded.Status); // the restart counter exists from the start, at 0
                _hooks.Add(ScrapeHooks.Add("embedded_postgres", _ => { EmbeddedPostgresMetrics.Publish(embedded.Status); return Task.CompletedTask; }, log));
            }

            if (options.RunsWorker)
            {
                var images = new ImageCacheSizeCollector(sp.GetRequiredService<DataPaths>());
                _hooks.Add(ScrapeHooks.Add("image_cache", images.CollectAsync, log));
                // The executor's telemetry registers its own hook; create it now so running jobs are sampled from the first scrape.
                sp.GetRequiredService<JobTelemetry>();
            }
            return Task.CompletedTask;
        }

        public Task StopAsync(CancellationToken ct)
        {
            foreach (var h in _hooks) h.Dispose();
            _hooks.Clear();
            return Task.CompletedTask;
        }
    }
}
