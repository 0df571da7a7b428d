using Hangfire;
using Hangfire.PostgreSql;
using Hangfire.PostgreSql.Factories;
using Npgsql;

namespace BatchRunner.Server.Storage;

/// <summary>Opening the job database and registering what reads and writes it: every SQL statement BatchRunner runs is behind these services.</summary>
public static class StorageServices
{
    /// <summary>The schema of Hangfire's tables, beside batchrunner's.</summary>
    public const string HangfireSchema = "hangfire";

    /// <summary>
    /// Connects to the job database, applies the migrations (once per database, whichever process comes first), and
    /// registers the stores, this host's Hangfire queue and its storage.
    /// </summary>
    public static async Task AddBatchRunnerStorageAsync(this IServiceCollection services, string connectionString, ILogger log, CancellationToken ct)
    {
        var dataSource = NpgsqlDataSource.Create(connectionString);
        try
        {
            await Migrator.MigrateAsync(dataSource, log, ct);
        }
        catch
        {
            await dataSource.DisposeAsync();
            throw;
        }
        services.AddSingleton(dataSource);
        services.AddSingleton<WorkflowSignal>();
        services.AddSingleton<JobStore>();
        services.AddSingleton<ScheduleStore>();
        services.AddSingleton<ScheduleQueue>();
        services.AddSingleton<IAttemptStore>(sp => sp.GetRequiredService<JobStore>());
        services.AddSingleton<NodeStore>();
        services.AddSingleton<TenantStore>();
        services.AddSingleton<DatabaseHealth>();
        services.AddSingleton<JobQueue>();

        // This process's own Hangfire storage instance, registered before AddHangfire so that the job client, the
        // server and the dashboard all use it rather than the static JobStorage.Current (two BatchRunner
        // hosts in one process, as in tests, must not share one).
        var storageOptions = new PostgreSqlStorageOptions
        {
            SchemaName = HangfireSchema,
            PrepareSchemaIfNecessary = true,
            // LISTEN/NOTIFY: a worker in another process picks a new job up in tens of milliseconds,
            // not after the 15 s default poll.
            EnableLongPolling = true,
            QueuePollInterval = TimeSpan.FromSeconds(5),
            // A fetched job stays invisible while its worker keeps it alive, however long it runs. A dead
            // worker's jobs are handed back within seconds by NodeRegistry (node heartbeats), so this
            // timeout is only the last resort and is long enough to ride out a database restart.
            UseSlidingInvisibilityTimeout = true,
            InvisibilityTimeout = TimeSpan.FromMinutes(5),
        };
        services.AddSingleton(storageOptions);
        services.AddSingleton<JobStorage>(new PostgreSqlStorage(new NpgsqlConnectionFactory(HangfireConnectionString(connectionString), storageOptions), storageOptions));
        // After a crash of the database (or of the whole machine) its Hangfire lock rows outlive their holders.
        await HangfireLocks.RemoveTakenBeforeDatabaseStartAsync(dataSource, HangfireSchema, log, ct);
    }

    /// <summary>
    /// Hangfire's connections skip the <c>DISCARD ALL</c> Npgsql sends when it reuses a pooled connection: with 10 jobs
    /// running it was half of a node's statements (each running job's cancellation check opens one). Hangfire.PostgreSql
    /// leaves no session state on them: no prepared statements, temporary tables or session settings (its transactions set
    /// their isolation themselves), its locks are rows, and its one LISTEN (long polling in its own fetch) never runs here:
    /// every queue a worker fetches is <see cref="FairShareQueueProvider"/>'s, which listens on a connection of its own.
    /// </summary>
    internal static string HangfireConnectionString(string connectionString) =>
        new NpgsqlConnectionStringBuilder(connectionString) { NoResetOnClose = true }.ConnectionString;

    /// <summary>Registers this worker's <see cref="FairShareQueueProvider"/>, fetching in <paramref name="policy"/>'s order.</summary>
    public static void AddFairShareQueues(this IServiceCollection services, Func<IServiceProvider, IFetchPolicy> policy) =>
        services.AddSingleton(sp => new FairShareQueueProvider((PostgreSqlStorage)sp.GetRequiredService<JobStorage>(), sp.GetRequiredService<PostgreSqlStorageOptions>(),
            sp.GetRequiredService<NpgsqlDataSource>(), policy(sp)));

    /// <summary>Makes the worker's queues (<paramref name="queues"/>) fetched by the <see cref="FairShareQueueProvider"/>. Once per host.</summary>
    public static void UseFairShareQueues(this IServiceProvider sp, IEnumerable<string> queues)
    {
        var storage = (PostgreSqlStorage)sp.GetRequiredService<JobStorage>();
        var provider = sp.GetRequiredService<FairShareQueueProvider>();
        // Hangfire may build the server's options more than once; each queue name is registered once.
        var missing = queues.Distinct().Where(q => storage.QueueProviders.GetProvider(q) != provider).ToList();
        if (missing.Count > 0) storage.QueueProviders.Add(provider, missing);
    }
}
