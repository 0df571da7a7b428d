using System.Net.Sockets;
using BatchRunner.Oci;
using BatchRunner.Oci.Store;
using BatchRunner.Runtime;
using BatchRunner.Server.Api;
using BatchRunner.Server.Execution;
using BatchRunner.Server.Storage;
using Hangfire;
using Hangfire.PostgreSql;
using Microsoft.AspNetCore.Diagnostics;
using Npgsql;
using Prometheus;

namespace BatchRunner.Server.Hosting;

/// <summary>Builds the BatchRunner host: storage first (embedded PostgreSQL, migrations), then API and worker.</summary>
public static partial class BatchRunnerApp
{
    public const string DefaultUrl = "http://127.0.0.1:8080";

    public static async Task<WebApplication> BuildAsync(string[] args, CancellationToken ct = default)
    {
        var builder = WebApplication.CreateBuilder(args);
        // BATCHRUNNER_* shortcuts sit above appsettings and ASPNETCORE_*; command-line arguments stay on top.
        builder.Configuration.AddInMemoryCollection(EnvironmentShortcuts.Read());
        builder.Configuration.AddCommandLine(args);
        if (string.IsNullOrEmpty(builder.Configuration["urls"])) builder.WebHost.UseUrls(DefaultUrl);

        var options = builder.Configuration.GetSection(BatchRunnerOptions.Section).Get<BatchRunnerOptions>() ?? new BatchRunnerOptions();
        options.Validate();
        builder.Services.AddSingleton(Microsoft.Extensions.Options.Options.Create(options));

        Directory.CreateDirectory(options.DataDir);
        using var bootLogs = LoggerFactory.Create(b => b.AddConsole());
        var bootLog = bootLogs.CreateLogger("BatchRunner.Startup");

        // Storage: one code path whether the database is embedded or external.
        EmbeddedPostgres? embedded = null;
        var connectionString = options.ConnectionString;
        if (string.IsNullOrWhiteSpace(connectionString))
        {
            embedded = await EmbeddedPostgres.StartAsync(options.DataDir, bootLog, ct);
            connectionString = embedded.ConnectionString;
        }
        try
        {
            var dataSource = NpgsqlDataSource.Create(connectionString);
            await Migrator.MigrateAsync(dataSource, bootLog, ct);
            builder.Services.AddSingleton(dataSource);
            if (embedded is not null) builder.Services.AddHostedService(_ => new EmbeddedPostgresLifetime(embedded));

            var apiKey = ApiKey.Resolve(options.ApiKey, options.DataDir);
            if (apiKey.Generated)
                Console.WriteLine($"BatchRunner generated an API key and stored it in {Path.Combine(options.DataDir, "api-key")}:\n  {apiKey.Value}");
            builder.Services.AddSingleton(apiKey);

            var runtime = options.RunsWorker ? await Components.SelectRuntimeAsync(options, bootLog, ct) : null;
            builder.AddBatchRunnerServices(options, connectionString, runtime);
            var app = builder.Build();
            app.MapBatchRunner(options);
            return app;
        }
        catch
        {
            if (embedded is not null) await embedded.StopAsync();
            throw;
        }
    }

    private static void AddBatchRunnerServices(this WebApplicationBuilder builder, BatchRunnerOptions options, string connectionString, RuntimeSelection? runtime)
    {
        var services = builder.Services;
        var paths = new DataPaths(options.DataDir);
        var node = NodeIdentity.For(options.NodeName, options.DataDir);
        services.AddSingleton(paths);
        services.AddSingleton(node);
        services.AddSingleton<JobStore>();
        services.AddSingleton<Observability.JobTelemetry>();
        services.AddProblemDetails();
        services.AddOpenApi();

        services.AddHangfire(cfg => cfg
            .SetDataCompatibilityLevel(CompatibilityLevel.Version_180)
            .UseSimpleAssemblyNameTypeSerializer()
            .UseRecommendedSerializerSettings()
            .UsePostgreSqlStorage(c => c.UseNpgsqlConnection(connectionString), new PostgreSqlStorageOptions
            {
                SchemaName = "hangfire",
                PrepareSchemaIfNecessary = true,
                // LISTEN/NOTIFY: a worker in another process picks a new job up in tens of milliseconds,
                // not after the 15 s default poll.
                EnableLongPolling = true,
                QueuePollInterval = TimeSpan.FromSeconds(5),
                // A fetched job stays invisible while its worker heartbeats it, however long it runs; when
                // the worker dies the job becomes visible again after this timeout, not after 30 minutes.
                UseSlidingInvisibilityTimeout = true,
                InvisibilityTimeout = TimeSpan.FromMinutes(1),
            }));

        // The image cache of this node; the images API (import, list, delete) works on it too.
        services.AddSingleton(sp => Components.CreateImageStore(options, paths, sp));

        if (options.RunsWorker)
        {
            services.AddSingleton<IImageStore>(sp => sp.GetRequiredService<ImageStore>());
            services.AddSingleton<ISnapshotter>(sp => Components.CreateSnapshotter(sp));
            services.AddSingleton(runtime!);
            services.AddSingleton<IContainerRuntime>(sp => Components.CreateRuntime(runtime!, paths, sp));
            services.AddSingleton<JobExecutor>();
            services.AddTransient<JobPerformer>();
            // Registered before the Hangfire server so it finishes before the first job is fetched.
            services.AddHostedService<NodeJanitor>();
            services.AddHangfireServer(o =>
            {
                o.ServerName = options.NodeName;
                o.WorkerCount = options.Workers;
                o.Queues = options.Queues.ToArray();
                // A cancel request reaches a running job within half a second.
                o.CancellationCheckInterval = TimeSpan.FromMilliseconds(500);
                o.ShutdownTimeout = TimeSpan.FromSeconds(30);
            });
        }
    }

    private static void MapBatchRunner(this WebApplication app, BatchRunnerOptions options)
    {
        app.UseExceptionHandler(new ExceptionHandlerOptions { StatusCodeSelector = StatusFor, ExceptionHandler = WriteProblemAsync });
        app.UseHttpMetrics();
        app.MapMetrics();
        app.MapGet("/healthz", HealthAsync).WithTags("Health");

        if (options.RunsApi)
        {
            app.MapOpenApi();
            app.MapJobsApiV1();
            app.UseHangfireDashboard("/hangfire", new DashboardOptions
            {
                Authorization = [new DashboardApiKeyFilter(app.Services.GetRequiredService<ApiKey>())],
                DashboardTitle = "BatchRunner",
                DisplayStorageConnectionString = false,
            });
        }
    }

    private static async Task<IResult> HealthAsync(NpgsqlDataSource db, NodeIdentity node, IServiceProvider sp, CancellationToken ct)
    {
        var options = sp.GetRequiredService<Microsoft.Extensions.Options.IOptions<BatchRunnerOptions>>().Value;
        string database;
        try
        {
            await using var cmd = db.CreateCommand("select 1");
            await cmd.ExecuteScalarAsync(ct);
            database = "ok";
        }
        catch (Exception e) when (e is NpgsqlException or SocketException or TimeoutException)
        {
            database = "unavailable: " + e.Message;
        }
        var runtime = options.RunsWorker ? sp.GetService<IContainerRuntime>() : null;
        var body = new
        {
            status = database == "ok" ? "ok" : "degraded",
            role = options.Role,
            node = node.Name,
            database,
            runtime = runtime is null ? null : new { name = runtime.Name, version = runtime.Version, selection = sp.GetService<RuntimeSelection>()?.Reason },
        };
        return database == "ok" ? TypedResults.Ok(body) : TypedResults.Json(body, statusCode: StatusCodes.Status503ServiceUnavailable);
    }

    /// <summary>The database being away is an outage (503, retry later), not a server bug (500).</summary>
    private static int StatusFor(Exception e) => IsDatabaseOutage(e) ? StatusCodes.Status503ServiceUnavailable : StatusCodes.Status500InternalServerError;

    private static bool IsDatabaseOutage(Exception e) =>
        e is NpgsqlException or SocketException or TimeoutException || (e.InnerException is { } inner && IsDatabaseOutage(inner));

    private static async Task WriteProblemAsync(HttpContext http)
    {
        var e = http.Features.Get<IExceptionHandlerFeature>()?.Error;
        var outage = e is not null && IsDatabaseOutage(e);
        http.Response.StatusCode = outage ? 503 : 500;
        if (outage) http.Response.Headers.RetryAfter = "5";
        await TypedResults.Problem(
            statusCode: http.Response.StatusCode,
            title: outage ? "The job database is unavailable" : "Internal server error",
            detail: outage ? "try again in a few seconds" : "the error was logged").ExecuteAsync(http);
    }

    /// <summary>Stops the embedded cluster after everything that uses it has stopped (hosted services stop in reverse order).</summary>
    private sealed class EmbeddedPostgresLifetime(EmbeddedPostgres pg) : IHostedService
    {
        public Task StartAsync(CancellationToken ct) => Task.CompletedTask;
        public Task StopAsync(CancellationToken ct) => pg.StopAsync();
    }
}
