using Npgsql;

namespace BatchRunner.Server.Storage;

/// <summary>
/// Hangfire.PostgreSql's distributed locks are rows of <c>SCHEMA.lock</c> that the holder deletes when it
/// is done. A holder whose connection died with the database never deletes its row, and Hangfire then
/// waits for the row to age out (DistributedLockTimeout, 10 minutes) before anyone may take that lock: a
/// job fetched just before the postmaster was killed stayed "enqueued", its state change waiting on its
/// own job lock. A lock taken before the database (re)started is void: every connection of that time is
/// gone, and its holder's next command fails on its dead connection. So those rows are removed at start-up
/// and after each restart of the embedded cluster.
/// </summary>
public static partial class HangfireLocks
{
    /// <returns>How many stale locks were removed (0 when Hangfire's schema does not exist yet).</returns>
    public static async Task<int> RemoveTakenBeforeDatabaseStartAsync(NpgsqlDataSource db, string schema, ILogger log, CancellationToken ct)
    {
        var removed = await RemoveAsync(db, schema, ct);
        if (removed > 0) LogRemoved(log, removed);
        return removed;
    }

    private static async Task<int> RemoveAsync(NpgsqlDataSource db, string schema, CancellationToken ct)
    {
        // "acquired" holds UTC without a time zone (Hangfire.PostgreSql writes DateTime.UtcNow).
        await using var cmd = db.CreateCommand($"""
            delete from "{schema}"."lock" where acquired < (pg_postmaster_start_time() at time zone 'UTC')
            """);
        try { return await cmd.ExecuteNonQueryAsync(ct); }
        catch (PostgresException e) when (e.SqlState is PostgresErrorCodes.UndefinedTable or PostgresErrorCodes.InvalidSchemaName) { return 0; }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Removed {Count} Hangfire locks taken before the database last started (their holders' connections died with it)")]
    private static partial void LogRemoved(ILogger log, int count);
}
