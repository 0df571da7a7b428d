using BatchRunner.Oci;
using BatchRunner.Oci.Store;
using BatchRunner.Runtime;
using BatchRunner.Runtime.Disk;
using BatchRunner.Server.Api;
using BatchRunner.Server.Api.OpenApi;
using BatchRunner.Server.Auth;
using BatchRunner.Server.Dashboard;
using BatchRunner.Server.Execution;
using BatchRunner.Server.Nodes;
using BatchRunner.Server.Observability;
using BatchRunner.Server.Scheduling;
using BatchRunner.Server.Storage;
using BatchRunner.Server.Storage.Embedded;
using Hangfire;
using Microsoft.AspNetCore.Diagnostics;
using Prometheus;

namespace BatchRunner.Server.Hosting;

/// <summary>Builds the BatchRunner host: storage first (embedded PostgreSQL, migrations), then API and worker.</summary>
public static partial class BatchRunnerApp
{
    public const string DefaultUrl = "http://127.0.0.1:8080";

    public static async Task<WebApplication> BuildAsync(string[] args, CancellationToken ct = default)
    {
        // appsettings.json is read from beside the executable, not from the working directory (a service
        // starts in /, scripts/start.sh in the repository): the shipped defaults apply wherever it is run from.
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = args, ContentRootPath = AppContext.BaseDirectory });
        // BATCHRUNNER_* shortcuts sit above appsettings and ASPNETCORE_*; command-line arguments stay on top.
        builder.Configuration.AddInMemoryCollection(EnvironmentShortcuts.Read());
        builder.Configuration.AddCommandLine(args);
        builder.AddBatchRunnerSystemd();
        builder.AddBatchRunnerLogging();
        if (string.IsNullOrEmpty(builder.Configuration["urls"])) builder.WebHost.UseUrls(DefaultUrl);

        var options = BatchRunnerOptions.ReadValid(builder.Configuration);
        builder.Services.AddSingleton(Microsoft.Extensions.Options.Options.Create(options));

        using var bootLogs = LoggerFactory.Create(b => LoggingSetup.ConfigureBootLogging(b, builder.Configuration));
        var bootLog = bootLogs.CreateLogger("BatchRunner.Startup");

        // When the machine runs out of memory, the kernel takes a job before this process or its database.
        OomScores.ProtectThisProcess(bootLog);

        // Storage: one code path whether the database is embedded or external.
        EmbeddedPostgres? embedded = null;
        var connectionString = options.ConnectionString;
        // Before anything touches the data directory: no other process may be using it (see DataDirectoryLock).
        var dataLock = DataDirectoryLock.Acquire(options.DataDir);
        try
        {
            var embeddedUser = string.IsNullOrWhiteSpace(connectionString) ? await EmbeddedPostgres.RunAsUserAsync(ct) : null;
            // Before anything writes there: no host user but root may use the data directory (see DataDirectoryAccess).
            var userNamespaceGid = options.RunsWorker && options.Isolation.UserNamespace.Enabled ? options.Isolation.UserNamespace.HostGidStart : (uint?)null;
            var access = DataDirectoryAccess.For(embeddedUser?.Gid, userNamespaceGid);
            access.Apply(new DataPaths(options.DataDir), userNamespaceGid);
            LogDataDirectoryMode(bootLog, options.DataDir, Convert.ToString((int)access.Mode, 8), access.Reason);
            if (string.IsNullOrWhiteSpace(connectionString))
            {
                embedded = await EmbeddedPostgres.StartAsync(options.DataDir, bootLog, ct);
                connectionString = embedded.ConnectionString;
            }
            await builder.Services.AddBatchRunnerStorageAsync(connectionString, bootLog, ct);
            // What the node knows of its database's outages (fencing), the cluster's recovery after each restart.
            builder.Services.AddEmbeddedPostgres(embedded);
            if (embedded is not null) builder.Services.AddHostedService(_ => new EmbeddedPostgresLifetime(embedded));

            var apiKey = BootstrapKey.Resolve(options.ApiKey, options.DataDir);
            if (apiKey.Generated)
                Console.WriteLine($"BatchRunner generated an API key and stored it in {Path.Combine(options.DataDir, "api-key")}:\n  {apiKey.Value}");
            builder.Services.AddSingleton(apiKey);

            var runtime = options.RunsWorker ? await Components.SelectRuntimeAsync(options, bootLog, ct) : null;
            var gpus = options.RunsWorker ? await Gpus.GpuNode.DiscoverAsync(options.Gpus, bootLog, ct) : null;
            var gpuMetrics = gpus is null ? null : Gpus.GpuNode.MetricsSource(options.Gpus, gpus, bootLog);
            builder.AddBatchRunnerServices(options, connectionString, runtime, gpus, gpuMetrics);
            // Released when the application is disposed, after every other service (it is the first the container makes).
            builder.Services.AddSingleton(_ => dataLock);
            var app = builder.Build();
            app.Services.GetRequiredService<DataDirectoryLock>();
            embedded?.UseLogger(app.Services.GetRequiredService<ILogger<EmbeddedPostgres>>());
            CancelSignalRequests.Register(app.Services);
            var hangfireLogs = HangfireLogging.Register(app.Services.GetRequiredService<ILoggerFactory>());
            app.Lifetime.ApplicationStopped.Register(hangfireLogs.Dispose);
            app.MapBatchRunner(options);
            return app;
        }
        catch
        {
            if (embedded is not null) await embedded.StopAsync();
            dataLock.Dispose();
            throw;
        }
    }

    private static void AddBatchRunnerServices(this WebApplicationBuilder builder, BatchRunnerOptions options, string connectionString,
        RuntimeSelection? runtime, BatchRunner.Runtime.Gpus.GpuInventory? gpus, BatchRunner.Runtime.Gpus.IGpuMetricsSource? gpuMetrics)
    {
        var services = builder.Services;
        var paths = new DataPaths(options.DataDir) { Datasets = options.Isolation.Datasets };
        var node = NodeIdentity.For(options.NodeName, options.DataDir);
        services.AddSingleton(paths);
        services.AddSingleton(node);
        services.AddSingleton(TimeProvider.System);
        services.AddSingleton<JobNodeLiveness>();
        // GET /api/v1/jobs/{id}?waitSeconds= is woken by a job's state change on any node; it listens only while a request waits.
        services.AddSingleton(sp => new JobStateSignal(sp.GetRequiredService<SessionConnections>(), sp.GetRequiredService<TimeProvider>(), sp.GetRequiredService<ILogger<JobStateSignal>>()));
        services.AddHostedService(sp => sp.GetRequiredService<JobStateSignal>());
        services.AddBatchRunnerObservability(options);
        services.AddProblemDetails();
        services.AddBatchRunnerOpenApi();
        services.AddBatchRunnerAuth(options);
        services.AddBatchRunnerDataProtection(options.SecretsKey);
        services.AddBatchRunnerWebhooks(options);
        services.AddBatchRunnerQueueReconciler();
        // Uploads a crashed API process left half-received, inputs a crashed worker left half-unpacked.
        services.AddHostedService<InputStagingSweeper>();
        // Job files: the inputs tars this node took, removal of deleted jobs' files, retention (every role: each
        // node removes its own files).
        services.AddSingleton(_ => new InputsStore(paths));
        services.AddSingleton(sp => new JobFiles(paths, sp.GetRequiredService<InputsStore>(), sp.GetRequiredService<JobStore>(), options.NodeName,
            sp.GetRequiredService<ILogger<JobFiles>>(), options.RunsWorker ? node.ContainerPrefix : null,
            sp.GetService<NodeReservations>() is { } reservations ? id => reservations.Jobs.Contains(id) : null));
        services.AddSingleton<JobFilesSweeper>();
        services.AddHostedService(sp => sp.GetRequiredService<JobFilesSweeper>());

        // Likewise this host's own job activator: the static JobActivator.Current would resolve JobPerformer
        // from whichever host configured Hangfire last, even after that host was disposed.
        services.AddSingleton<JobActivator>(sp => new Hangfire.AspNetCore.AspNetCoreJobActivator(sp.GetRequiredService<IServiceScopeFactory>()));
        services.AddHangfire(cfg => cfg
            .SetDataCompatibilityLevel(CompatibilityLevel.Version_180)
            .UseSimpleAssemblyNameTypeSerializer()
            .UseRecommendedSerializerSettings()
            // Process-wide: forwards to a live host's loggers (see HangfireLogging).
            .UseLogProvider(HangfireLogging.Provider)
            // Jobs a node cannot run now, and retries with back-off, go back to the queue or the schedule.
            .UseFilter(RescheduleFilter.Instance)
            // Jobs that failed, were cancelled, wait for dependencies or are arrays go to the Hangfire state that says so.
            .UseFilter(HangfireStateMirrorFilter.Instance));
        HangfireSetup.LeaveContinuationsToBatchRunner();

        services.AddSingleton<LiveNodes>();
        services.AddSingleton<IClusterAllocation>(sp => sp.GetRequiredService<LiveNodes>());
        // The data directory's free space and its reserve: admission on workers, /healthz and the node record everywhere.
        services.AddSingleton(_ => new NodeDisk(paths.Root, options.MinFreeDiskBytes(), options.RunsWorker && options.Disk.Enforce));
        // Logs and outputs stay on the node that ran the job; the API forwards requests for them there.
        services.AddSingleton(sp => new NodeAddress(sp.GetRequiredService<Microsoft.AspNetCore.Hosting.Server.IServer>(), options.AdvertiseUrl));
        services.AddSingleton<ClusterToken>();
        services.AddSingleton<NodeClient>();
        services.AddHttpClient(Api.NodeFilesApi.HttpClientName, c => c.Timeout = Timeout.InfiniteTimeSpan);
        services.AddSingleton<INodeFiles, NodeFilesClient>();
        // Dependencies, arrays and schedules move on from every node (API and worker alike).
        services.AddHostedService<Workflows.WorkflowSweeper>();

        // The image cache of this node; the images API (import, list, delete) works on it too.
        services.AddSingleton(sp => Components.CreateImageStore(options, paths, sp));

        if (options.RunsWorker)
        {
            services.AddSingleton<IImageStore>(sp => new InstrumentedImageStore(sp.GetRequiredService<ImageStore>()));
            services.AddSingleton<ISnapshotter>(sp => Components.CreateSnapshotter(sp));
            services.AddSingleton(runtime!);
            services.AddSingleton<IContainerRuntime>(sp => Components.CreateRuntime(runtime!, paths, sp));
            // The attempt's phases, in AttemptRunner's order; each owns one resource of an attempt.
            services.AddSingleton<IInputsSource, InputsSource>();
            services.AddSingleton<Execution.Phases.InputsPhase>();
            services.AddSingleton<Execution.Phases.InputsFromPhase>();
            services.AddSingleton<Execution.Phases.ImagePhase>();
            if (options.Disk.Enforce)
                // Disks of the default limit made ahead (Disk:PoolSize), and released ones emptied while still mounted, named
                // with the node's prefix so that its janitor removes them (unmounting them first) after a crash.
                services.AddSingleton<IDiskVolumes>(sp =>
                {
                    var maker = new LoopDiskVolumes(new LoopDiskOptions { Directories = Execution.Phases.DiskPhase.DiskDirectories },
                        sp.GetRequiredService<ILogger<LoopDiskVolumes>>());
                    return options.Disk.PoolSize > 0
                        ? new PooledDiskVolumes(maker, paths.RunRoot, node.ContainerPrefix + "disk-pool-", options.Disk.DefaultBytes(), options.Disk.PoolSize,
                            sp.GetRequiredService<ILogger<PooledDiskVolumes>>(), new KeepMounted(Execution.Phases.DiskPhase.RenewedDirectories))
                        : maker;
                });
            services.AddSingleton(sp => new Execution.Phases.DiskPhase(sp.GetRequiredService<NodeDisk>(),
                sp.GetRequiredService<Microsoft.Extensions.Options.IOptions<BatchRunnerOptions>>(), sp.GetService<IDiskVolumes>()));
            services.AddSingleton<Execution.Phases.RootfsPhase>();
            services.AddSingleton<Execution.Phases.ContainerPhase>();
            // Running jobs' usage, read from their cgroups and written to their records every LiveUsageSeconds.
            services.AddSingleton<LiveUsage>();
            services.AddHostedService<LiveUsagePublisher>();
            services.AddSingleton<Execution.Phases.OutputsPhase>();
            services.AddSingleton<AttemptRunner>();
            services.AddSingleton<JobExecutor>();
            // New messages name IJobPerformer; messages enqueued by older versions name JobPerformer itself.
            services.AddTransient<JobPerformer>();
            services.AddTransient<IJobPerformer>(sp => sp.GetRequiredService<JobPerformer>());
            // A schedule's firing: one run, which this worker then runs.
            services.AddTransient<IScheduleRunner, ScheduledRunPerformer>();
            services.AddSingleton(gpus!);
            services.AddSingleton(sp => new Gpus.GpuMetricsPublisher(options.NodeName, gpus!.Gpus));
            services.AddSingleton(sp => new Gpus.GpuMonitor(gpuMetrics, sp.GetRequiredService<Gpus.GpuMetricsPublisher>(), TimeSpan.FromSeconds(Math.Max(1, options.Gpus.SampleSeconds)),
                sp.GetRequiredService<ILogger<Gpus.GpuMonitor>>()));
            services.AddHostedService(sp => sp.GetRequiredService<Gpus.GpuMonitor>());
            services.AddSingleton<Gpus.GpuNode>();
            // CPUs, memory, GPUs and disk of this node, reserved together by the executor.
            services.AddSingleton(sp => new NodeReservations(options.NodeName, Components.Capacity(options), gpus!.Gpus, sp.GetRequiredService<NodeDisk>()));
            services.AddSingleton<NodeRegistry>();
            services.AddSingleton<INodeFence>(sp => sp.GetRequiredService<NodeRegistry>());
            // Hosted services start in this order and stop in reverse: leftovers are removed and the node
            // registered before the Hangfire server fetches the first job; on shutdown the Hangfire server
            // (running jobs, grace period) stops first.
            // A cancel wakes the attempt it stops at once, from any node (LISTEN/NOTIFY), so that no running job polls for it.
            services.AddSingleton(sp => new CancelSignal(sp.GetRequiredService<SessionConnections>(), sp.GetRequiredService<TimeProvider>(), sp.GetRequiredService<ILogger<CancelSignal>>()));
            services.AddHostedService(sp => sp.GetRequiredService<CancelSignal>());
            services.AddHostedService<NodeJanitor>();
            services.AddHostedService(sp => sp.GetRequiredService<NodeRegistry>());
            services.AddSingleton<ImageCacheCollector>();
            services.AddHostedService(sp => sp.GetRequiredService<ImageCacheCollector>());
            // A running job gets the shutdown grace to finish, then its own stop grace (signal, then SIGKILL).
            services.Configure<HostOptions>(h => h.ShutdownTimeout = options.JobsStopTimeout + TimeSpan.FromSeconds(20));
            // Fair share: the worker's queues are fetched by FairShareQueueProvider, in FairShare's order, one job at a time.
            services.AddSingleton<FairShare>();
            services.AddFairShareQueues(sp => sp.GetRequiredService<FairShare>());
            services.AddHangfireServer((sp, o) =>
            {
                sp.UseFairShareQueues(options.Queues);
                o.ServerName = options.NodeName;
                o.WorkerCount = options.Workers ?? BatchRunnerOptions.DefaultWorkers(Environment.ProcessorCount);
                o.Queues = options.Queues.ToArray();
                // A cancel request reaches a running job at once through CancelSignal (LISTEN/NOTIFY); Hangfire's reads of each
                // running job's state (at 1 s, with 10 jobs running, a third of the node's statements) are only a safety net.
                o.CancellationCheckInterval = CancellationCheckInterval;
                o.ShutdownTimeout = options.JobsStopTimeout + TimeSpan.FromSeconds(10);
                // Retries with back-off and bounced jobs wait in the schedule; the process that scheduled one enqueues it
                // when due (DueScheduledJobs), so this poll (about eight statements, on every node) is only the fallback and
                // what fires schedules' recurring jobs, within this interval of their cron time.
                o.SchedulePollingInterval = SchedulePollingInterval;
            });
        }
    }

    /// <summary>How often Hangfire reads the state of each job running here, to fire its token when it was deleted or
    /// handed elsewhere: a safety net behind <see cref="CancelSignal"/>, which wakes a cancelled job at once.</summary>
    public static readonly TimeSpan CancellationCheckInterval = TimeSpan.FromSeconds(30);

    /// <summary>How often Hangfire's delayed-job and recurring-job schedulers look (it was 1 s: idle, their locks and reads
    /// were more than half of a node's database traffic).</summary>
    public static readonly TimeSpan SchedulePollingInterval = TimeSpan.FromSeconds(5);

    private static void MapBatchRunner(this WebApplication app, BatchRunnerOptions options)
    {
        app.UseBatchRunnerRequestLog();
        app.UseExceptionHandler(new ExceptionHandlerOptions { StatusCodeSelector = StatusFor, ExceptionHandler = WriteProblemAsync });
        // Routing, then the key (who), its role (may it), its rate; after the request log and the exception handler,
        // so that their answers are logged and problem details too.
        app.UseRouting();
        app.UseAuthentication();
        app.UseAuthorization();
        app.UseAntiforgery();
        app.UseBatchRunnerRateLimits();
        app.UseHttpMetrics();
        // Every endpoint refuses a query parameter it does not take (a misspelt filter must not match everything).
        app.UseQueryParameterCheck();
        app.MapMetrics().AnyQuery();
        app.MapGet("/healthz", HealthAsync).WithTags("Health");
        app.MapNodeFilesApi();

        if (options.RunsApi)
        {
            app.MapOpenApi();
            app.MapJobsApiV1();
            app.MapSchedulesApiV1();
            app.MapNodesApiV1();
            app.MapImagesApiV1();
            app.MapApiKeysApiV1();
            app.MapTenantsApiV1();
            app.UseBatchRunnerDashboard();
        }
    }

    private static async Task<IResult> HealthAsync(DatabaseHealth db, NodeIdentity node, IServiceProvider sp, CancellationToken ct)
    {
        var options = sp.GetRequiredService<Microsoft.Extensions.Options.IOptions<BatchRunnerOptions>>().Value;
        var database = await db.CheckAsync(ct);
        var runtime = options.RunsWorker ? sp.GetService<IContainerRuntime>() : null;
        var body = new
        {
            status = database == DatabaseHealth.Ok ? "ok" : "degraded",
            role = options.Role,
            node = node.Name,
            database,
            embedded = sp.GetService<EmbeddedPostgres>() is { } pg ? EmbeddedHealth(pg.Status) : null,
            runtime = runtime is null ? null : new { name = runtime.Name, version = runtime.Version, selection = sp.GetService<RuntimeSelection>()?.Reason },
            disk = Disk(sp.GetRequiredService<NodeDisk>(), options),
            gpus = sp.GetService<BatchRunner.Runtime.Gpus.GpuInventory>() is { } inv
                ? new { count = inv.Gpus.Count, source = inv.Source, devices = inv.Gpus.Select(g => new { index = g.Index, uuid = g.Uuid, model = g.Model, memoryBytes = g.MemoryBytes }) }
                : null,
        };
        return database == DatabaseHealth.Ok ? TypedResults.Ok(body) : TypedResults.Json(body, statusCode: StatusCodes.Status503ServiceUnavailable);
    }

    /// <summary>The data directory's space: "ok", or "below_reserve" with why no job starts (the embedded PostgreSQL
    /// and pulls keep the reserve); whether jobs get size-limited disks here.</summary>
    private static object Disk(NodeDisk disk, BatchRunnerOptions options)
    {
        DiskStatus s;
        try { s = disk.Read(); }
        catch (IOException e) { return new { status = "unknown", error = e.Message }; }
        return new
        {
            status = s.UnderReserve ? "below_reserve" : "ok",
            pressure = s.Pressure,
            dataDir = s.DataDir,
            totalBytes = s.TotalBytes,
            freeBytes = s.FreeBytes,
            reserveBytes = s.ReserveBytes,
            availableBytes = s.AvailableBytes,
            jobLimits = options.RunsWorker ? (options.Disk.Enforce ? "enforced" : "off") : null,
        };
    }

    /// <summary>The embedded cluster's supervision as /healthz shows it (state in lower case, as API states are).</summary>
    private static object EmbeddedHealth(Storage.Embedded.EmbeddedPostgresStatus s) => new
    {
        state = s.State.ToString().ToLowerInvariant(),
        pid = s.Pid,
        adopted = s.Adopted,
        restarts = s.Restarts,
        lastRestartCause = s.LastRestartCause,
        lastRestartAt = s.LastRestartAt,
        logDirectory = s.LogDirectory,
    };

    /// <summary>The database being away is an outage (503, retry later), not a server bug (500).</summary>
    private static int StatusFor(Exception e) => DatabaseErrors.IsOutage(e) ? StatusCodes.Status503ServiceUnavailable : StatusCodes.Status500InternalServerError;

    private static async Task WriteProblemAsync(HttpContext http)
    {
        var e = http.Features.Get<IExceptionHandlerFeature>()?.Error;
        var outage = e is not null && DatabaseErrors.IsOutage(e);
        http.Response.StatusCode = outage ? 503 : 500;
        if (outage) http.Response.Headers.RetryAfter = "5";
        await TypedResults.Problem(
            statusCode: http.Response.StatusCode,
            title: outage ? "The job database is unavailable" : "Internal server error",
            detail: outage ? "try again in a few seconds" : "the error was logged").ExecuteAsync(http);
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Data directory {DataDir}: mode {Mode} ({Reason})")]
    private static partial void LogDataDirectoryMode(ILogger logger, string dataDir, string mode, string reason);

    /// <summary>Stops the embedded cluster after everything that uses it has stopped (hosted services stop in reverse order).</summary>
    private sealed class EmbeddedPostgresLifetime(EmbeddedPostgres pg) : IHostedService
    {
        public Task StartAsync(CancellationToken ct) => Task.CompletedTask;
        public Task StopAsync(CancellationToken ct) => pg.StopAsync();
    }
}
