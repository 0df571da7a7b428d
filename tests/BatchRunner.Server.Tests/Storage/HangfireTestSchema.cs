using System.Globalization;
using BatchRunner.Server.Storage;
using Hangfire.PostgreSql;
using Hangfire.PostgreSql.Factories;
using Hangfire.States;
using Npgsql;

namespace BatchRunner.Server.Tests.Storage;

/// <summary>A Hangfire storage on a new schema of its own (and a pool of its own), dropped on disposal: for tests that
/// compare this process's storage (batched) with Hangfire.PostgreSql's own transactions.</summary>
internal sealed class HangfireTestSchema(NpgsqlDataSource db, string name, HangfireStorage storage, PostgreSqlStorageOptions options) : IAsyncDisposable
{
    public string Name => name;
    public HangfireStorage Storage => storage;
    public PostgreSqlStorageOptions Options => options;

    public static HangfireTestSchema Create(NpgsqlDataSource db, bool batched, string prefix, string? sessionOptions = null)
    {
        var name = prefix + (batched ? "_batched_" : "_stock_") + Guid.NewGuid().ToString("N")[..8];
        var options = new PostgreSqlStorageOptions { SchemaName = name, PrepareSchemaIfNecessary = true, EnableLongPolling = true };
        // A pool of its own, not shared with the fixture's server (Npgsql pools by connection string).
        var cs = new NpgsqlConnectionStringBuilder(db.ConnectionString) { ApplicationName = name, Options = sessionOptions }.ConnectionString;
        return new HangfireTestSchema(db, name, new HangfireStorage(new NpgsqlConnectionFactory(cs, options), options) { BatchedTransactions = batched }, options);
    }

    /// <summary>Hangfire's Processing state as its worker makes it (the constructor is internal to Hangfire.Core).</summary>
    public static ProcessingState Processing(string serverId = "server-1", string workerId = "worker-1") =>
        (ProcessingState)Activator.CreateInstance(typeof(ProcessingState), System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance,
            null, [serverId, workerId], CultureInfo.InvariantCulture)!;

    public async ValueTask DisposeAsync()
    {
        await using var cmd = db.CreateCommand($"drop schema if exists \"{name}\" cascade");
        await cmd.ExecuteNonQueryAsync();
    }
}
