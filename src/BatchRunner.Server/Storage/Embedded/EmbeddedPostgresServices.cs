using Npgsql;

namespace BatchRunner.Server.Storage.Embedded;

/// <summary>Registers what the rest of the host knows of the embedded cluster, and what it does after each restart.</summary>
public static class EmbeddedPostgresServices
{
    /// <summary>
    /// <see cref="IDatabaseAvailability"/> (the embedded cluster, or <see cref="ExternalDatabase"/> when
    /// <paramref name="embedded"/> is null: never known to be restarting), the cluster itself for /healthz, and
    /// <see cref="EmbeddedPostgresRecovery"/>. Call after AddBatchRunnerStorageAsync.
    /// </summary>
    public static IServiceCollection AddEmbeddedPostgres(this IServiceCollection services, EmbeddedPostgres? embedded)
    {
        services.AddSingleton<IDatabaseAvailability>(embedded is null ? ExternalDatabase.Instance : embedded);
        if (embedded is null) return services;
        services.AddSingleton(embedded);
        services.AddHostedService<EmbeddedPostgresRecovery>();
        return services;
    }
}

/// <summary>
/// Each time the embedded cluster accepts connections again after a restart: the connection pools are cleared
/// (their connections lead to the dead postmaster and would each fail once more), and the Hangfire locks taken
/// before the restart are removed (<see cref="HangfireLocks"/>: Hangfire would wait ten minutes for them).
/// </summary>
internal sealed class EmbeddedPostgresRecovery(EmbeddedPostgres pg, NpgsqlDataSource db, ILogger<EmbeddedPostgresRecovery> log) : IHostedService
{
    public Task StartAsync(CancellationToken ct)
    {
        pg.Restarted += OnRestarted;
        return Task.CompletedTask;
    }

    public Task StopAsync(CancellationToken ct)
    {
        pg.Restarted -= OnRestarted;
        return Task.CompletedTask;
    }

    private void OnRestarted()
    {
        db.Clear();
        NpgsqlConnection.ClearAllPools();
        _ = RemoveStaleLocksAsync();
    }

    private async Task RemoveStaleLocksAsync()
    {
        try
        {
            await Durably.RunAsync(c => HangfireLocks.RemoveTakenBeforeDatabaseStartAsync(db, StorageServices.HangfireSchema, log, c), deadline: TimeSpan.FromMinutes(1));
        }
        catch (Exception e) when (DatabaseErrors.IsOutage(e)) { /* down again: the next restart removes them */ }
    }
}
