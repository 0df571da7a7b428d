using System.Diagnostics;
using BatchRunner.Server.Storage;
using BatchRunner.Testing;
using Hangfire;
using Hangfire.PostgreSql;
using Hangfire.PostgreSql.Factories;
using Hangfire.Storage;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;

namespace BatchRunner.Server.Tests.Storage;

/// <summary>
/// Hangfire's distributed locks as this process's storage takes them (<see cref="HangfireTransactionLocks"/>), on the
/// fixture's real database: exclusive, re-entrant on one connection, no row and no write, gone with their holder.
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class HangfireTransactionLocksFacts(ServerFixture f)
{
    private static readonly TimeSpan Short = TimeSpan.FromMilliseconds(200);

    private JobStorage Storage => f.App.Services.GetRequiredService<JobStorage>();
    private NpgsqlDataSource Db => f.App.Services.GetRequiredService<NpgsqlDataSource>();

    private static string NewResource() => "job:lock-test-" + Guid.NewGuid().ToString("N")[..8] + ":state-lock";

    private async Task<long> ScalarAsync(string sql, params object[] args)
    {
        await using var cmd = Db.CreateCommand(sql);
        foreach (var a in args) cmd.Parameters.Add(new NpgsqlParameter { Value = a });
        return Convert.ToInt64(await cmd.ExecuteScalarAsync());
    }

    /// <summary>Takes the lock (and releases it) once it is free, trying until <paramref name="within"/> has passed.</summary>
    private static void EventuallyAcquire(Func<IDisposable> acquire, TimeSpan within)
    {
        var deadline = DateTime.UtcNow + within;
        while (true)
        {
            try
            {
                acquire().Dispose();
                return;
            }
            catch (DistributedLockTimeoutException) when (DateTime.UtcNow < deadline) { }
        }
    }

    [Fact]
    public void AcquireDistributedLock_ExcludesAnotherConnection_UntilTheHolderReleasesIt()
    {
        var resource = NewResource();
        using var first = Storage.GetConnection();
        using var second = Storage.GetConnection();

        var held = first.AcquireDistributedLock(resource, Short);
        var waited = Stopwatch.StartNew();
        Assert.ThrowsAny<DistributedLockTimeoutException>(() => second.AcquireDistributedLock(resource, Short));
        // It waited about the timeout asked for, not PostgreSQL's default (no limit) nor Npgsql's command timeout.
        Assert.InRange(waited.Elapsed, Short * 0.9, TimeSpan.FromSeconds(10));
        // Another resource is not held.
        using (second.AcquireDistributedLock(NewResource(), Short)) { }

        held.Dispose();
        using (second.AcquireDistributedLock(resource, Short)) { }
    }

    [Fact]
    public void AcquireDistributedLock_IsHeldOnceAndReleasedWithItsLastHolder_WhenOneConnectionTakesItTwice()
    {
        var resource = NewResource();
        using var connection = Storage.GetConnection();
        using var other = Storage.GetConnection();

        var outer = connection.AcquireDistributedLock(resource, Short);
        var inner = connection.AcquireDistributedLock(resource, Short);
        inner.Dispose();
        Assert.ThrowsAny<DistributedLockTimeoutException>(() => other.AcquireDistributedLock(resource, Short));
        outer.Dispose();
        using (other.AcquireDistributedLock(resource, Short)) { }
    }

    [Fact]
    public async Task AcquireDistributedLock_WritesNoRowAndAssignsNoTransactionId_WhileHeld()
    {
        // Hangfire.PostgreSql's own lock inserts a row into hangfire.lock (and deletes it): two commits with WAL flushes.
        var resource = NewResource();
        using var connection = Storage.GetConnection();

        using (connection.AcquireDistributedLock(resource, Short))
        {
            Assert.Equal(0, await ScalarAsync($"select count(*) from {StorageServices.HangfireSchema}.lock where resource like '%' || $1", resource));
            // Held by a transaction that has written nothing: an advisory lock, and no transaction id (no WAL).
            Assert.Equal(1, await ScalarAsync("""
                select count(*) from pg_locks l join pg_stat_activity a on a.pid = l.pid
                 where l.locktype = 'advisory' and l.granted and a.backend_xid is null
                   and (l.classid::int8 << 32) | l.objid::int8 = hashtextextended($1, 0)
                """, $"{StorageServices.HangfireSchema}:{resource}"));
        }
        Assert.Equal(0, await ScalarAsync("select count(*) from pg_locks where locktype = 'advisory' and (classid::int8 << 32) | objid::int8 = hashtextextended($1, 0)",
            $"{StorageServices.HangfireSchema}:{resource}"));
    }

    [Fact]
    public async Task AcquireDistributedLock_IsFreeAtOnce_WhenItsHoldersSessionDies()
    {
        // A process killed, a connection broken, a database restarted: the lock goes with the session that held it, where
        // a row stayed until it aged out (ten minutes) or HangfireLocks removed it.
        var resource = NewResource();
        using var connection = Storage.GetConnection();
        var held = connection.AcquireDistributedLock(resource, Short);
        var holder = await ScalarAsync("select pid from pg_locks where locktype = 'advisory' and granted and (classid::int8 << 32) | objid::int8 = hashtextextended($1, 0)",
            $"{StorageServices.HangfireSchema}:{resource}");

        Assert.Equal(1, await ScalarAsync("select count(*) from (select pg_terminate_backend($1::int4)) t", holder));

        using var other = Storage.GetConnection();
        EventuallyAcquire(() => other.AcquireDistributedLock(resource, Short), TimeSpan.FromSeconds(10));
        // Releasing after the session died is quiet (the lock is already gone).
        held.Dispose();
    }

    [Fact]
    public void AcquireDistributedLock_EndsTheSession_WhenItsHolderStaysIdleLongerThanTheLockTimeout()
    {
        // A holder that went silent (a partition) loses the lock after DistributedLockTimeout, as a row that old was taken
        // over; here with a 1 s timeout on locks of their own.
        var options = new PostgreSqlStorageOptions { SchemaName = StorageServices.HangfireSchema, DistributedLockTimeout = TimeSpan.FromSeconds(1) };
        var locks = new HangfireTransactionLocks(new NpgsqlConnectionFactory(Db.ConnectionString, options), options);
        var resource = NewResource();
        var held = locks.Acquire(resource, Short);

        EventuallyAcquire(() => locks.Acquire(resource, Short), TimeSpan.FromSeconds(15));
        held.Dispose();
    }

    [Fact]
    public async Task Acquire_TakesTheLockAndLeavesHangfireAWorkingConnection_WhenThePoolsConnectionsDiedWithTheDatabase()
    {
        // After a database restart Hangfire's pool still holds connections to the dead server: the first use of each fails.
        // The lock is taken on a new one, and the state change it guards finds no dead one left (a cancel right after a
        // restart went 503 when the lock was taken elsewhere: CancelAcrossNodesFacts).
        // A pool of its own (Npgsql pools by connection string).
        var options = new PostgreSqlStorageOptions { SchemaName = StorageServices.HangfireSchema };
        var connections = new NpgsqlConnectionFactory(new NpgsqlConnectionStringBuilder(Db.ConnectionString) { ApplicationName = "lock-test-" + Guid.NewGuid().ToString("N")[..8] }.ConnectionString, options);
        var locks = new HangfireTransactionLocks(connections, options);
        // Two idle connections in the pool, both of whose sessions then end.
        var first = connections.GetOrCreateConnection();
        var second = connections.GetOrCreateConnection();
        long[] pids = [await BackendPidAsync(first), await BackendPidAsync(second)];
        await first.DisposeAsync();
        await second.DisposeAsync();
        foreach (var pid in pids)
        {
            Assert.Equal(1, await ScalarAsync("select count(*) from (select pg_terminate_backend($1::int4)) t", pid));
            await Poll.UntilAsync(() => ScalarAsync("select count(*) from pg_stat_activity where pid = $1::int4", pid), n => n == 0, TimeSpan.FromSeconds(10), "the backend to end");
        }

        using (locks.Acquire(NewResource(), TimeSpan.FromSeconds(5)))
        {
            // The other dead connection went with the pool: the next one Hangfire takes, while the lock holds its own,
            // works at once.
            await using var next = connections.GetOrCreateConnection();
            Assert.DoesNotContain(await BackendPidAsync(next), pids);
        }
    }

    private static async Task<long> BackendPidAsync(NpgsqlConnection conn)
    {
        if (conn.State != System.Data.ConnectionState.Open) await conn.OpenAsync();
        await using var cmd = new NpgsqlCommand("select pg_backend_pid()", conn);
        return Convert.ToInt64(await cmd.ExecuteScalarAsync());
    }

    [Fact]
    public void JobStorage_IsTheOneWithTransactionLocks_ForTheClientServerAndDashboard()
    {
        Assert.IsType<HangfireStorage>(Storage);
        Assert.IsAssignableFrom<PostgreSqlConnection>(Storage.GetConnection());
    }
}
