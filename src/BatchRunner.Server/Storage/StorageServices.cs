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
        var dataSource = NpgsqlDataSource.Create(PooledConnectionString(connectionString));
        var sessions = new SessionConnections(connectionString);
        try
        {
            // The migrator's advisory lock is a session's: on a connection of its own, closed after.
            await Migrator.MigrateAsync(sessions.DataSource, log, ct);
        }
        catch
        {
            await dataSource.DisposeAsync();
            await sessions.DisposeAsync();
            throw;
        }
        services.AddSingleton(dataSource);
        services.AddSingleton(sessions);
        services.AddSingleton<WorkflowSignal>();
        services.AddSingleton<JobStore>();
        services.AddSingleton<ScheduleStore>();
        services.AddSingleton<ScheduleQueue>();
        services.AddSingleton<IAttemptStore>(sp => sp.GetRequiredService<JobStore>());
        services.AddSingleton<NodeStore>();
        services.AddSingleton<TenantStore>();
        services.AddSingleton<TenantChanges>();
        services.AddSingleton<DatabaseHealth>();
        services.AddSingleton(_ => new HangfireCalls());
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
        services.AddSingleton<JobStorage>(new HangfireStorage(new NpgsqlConnectionFactory(PooledConnectionString(connectionString), storageOptions), storageOptions));
        // After a crash of the database (or of the whole machine) its Hangfire lock rows outlive their holders.
        await HangfireLocks.RemoveTakenBeforeDatabaseStartAsync(dataSource, HangfireSchema, log, ct);
    }

    /// <summary>
    /// Pooled connections, BatchRunner's own and Hangfire's, skip the <c>DISCARD ALL</c> Npgsql sends when it reuses one:
    /// it was a quarter of the statements per job (27 of 111) and, with 10 jobs running, half of a node's. What runs on
    /// them leaves no session state behind but Npgsql's own prepared statements (below): no temporary tables, session settings, LISTENs or session
    /// advisory locks (transactions set their isolation themselves; Hangfire's locks are transaction-scoped; an open transaction is rolled
    /// back when the connection goes back, reset or not). What needs session state opens a <see cref="SessionConnections"/>
    /// connection instead: the migrator's lock, <see cref="FairShareQueueProvider"/>'s LISTEN. Hangfire.PostgreSql's own
    /// LISTEN (long polling in its fetch) never runs here: every queue a worker fetches is <see cref="FairShareQueueProvider"/>'s.
    /// </summary>
    /// <remarks>
    /// They also prepare on the server what they run repeatedly (Npgsql's automatic preparation): a statement whose text
    /// has run <see cref="AutoPrepareMinUsages"/> times on a physical connection is prepared there, and later runs skip
    /// PostgreSQL's parse and plan. Each physical connection keeps at most <see cref="MaxAutoPrepare"/> of them, the least
    /// recently used dropped first; a job's path runs about 45 distinct statements (BatchRunner's and Hangfire's). They
    /// live as long as the physical connection (no reset drops them), die with it (a database restart: Npgsql prepares
    /// again on the new one), and a statement whose result type a later migration changed fails once on each connection
    /// that had it prepared ("cached plan must not change result type"), after which Npgsql forgets it; BatchRunner's SQL
    /// names its columns, so only a column's type change could do that. A few statements built from a request (list
    /// filters) vary in text; they rarely repeat, so they only pass through the candidates.
    /// </remarks>
    internal static string PooledConnectionString(string connectionString) =>
        new NpgsqlConnectionStringBuilder(connectionString)
        {
            NoResetOnClose = true,
            MaxAutoPrepare = MaxAutoPrepare,
            AutoPrepareMinUsages = AutoPrepareMinUsages,
        }.ConnectionString;

    /// <summary>Prepared statements kept per pooled physical connection.</summary>
    internal const int MaxAutoPrepare = 100;

    /// <summary>Runs of the same text on a connection before it is prepared there.</summary>
    internal const int AutoPrepareMinUsages = 2;

    /// <summary>Registers this worker's <see cref="FairShareQueueProvider"/>, fetching in <paramref name="policy"/>'s order.</summary>
    public static void AddFairShareQueues(this IServiceCollection services, Func<IServiceProvider, IFetchPolicy> policy) =>
        services.AddSingleton(sp => new FairShareQueueProvider((PostgreSqlStorage)sp.GetRequiredService<JobStorage>(), sp.GetRequiredService<PostgreSqlStorageOptions>(),
            sp.GetRequiredService<NpgsqlDataSource>(), sp.GetRequiredService<SessionConnections>(), policy(sp), sp.GetRequiredService<TenantChanges>()));

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
