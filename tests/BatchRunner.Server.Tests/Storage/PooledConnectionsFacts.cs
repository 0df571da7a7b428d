using BatchRunner.Server.Storage;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;

namespace BatchRunner.Server.Tests.Storage;

/// <summary>
/// BatchRunner's and Hangfire's pooled connections (<see cref="StorageServices.PooledConnectionString"/>) prepare what
/// they run repeatedly, on the fixture's real database.
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class PooledConnectionsFacts(ServerFixture f)
{
    private NpgsqlDataSource Db => f.App.Services.GetRequiredService<NpgsqlDataSource>();

    private static async Task<long> PreparedAsync(NpgsqlConnection conn, string text)
    {
        await using var cmd = new NpgsqlCommand("select count(*) from pg_prepared_statements where statement = $1", conn) { Parameters = { new() { Value = text } } };
        return (long)(await cmd.ExecuteScalarAsync())!;
    }

    [Fact]
    public async Task PooledConnection_PreparesAStatementOnTheServer_WhenItRunsTwice()
    {
        var text = $"select $1::int4 + 1 as pooled_prepare_{Guid.NewGuid():N}";
        await using var conn = await Db.OpenConnectionAsync();
        async Task<int> RunAsync()
        {
            await using var cmd = new NpgsqlCommand(text, conn) { Parameters = { new() { Value = 41 } } };
            return (int)(await cmd.ExecuteScalarAsync())!;
        }

        Assert.Equal(42, await RunAsync());
        Assert.Equal(0, await PreparedAsync(conn, text));
        Assert.Equal(42, await RunAsync());
        Assert.Equal(42, await RunAsync());

        Assert.Equal(1, await PreparedAsync(conn, text));
        var builder = new NpgsqlConnectionStringBuilder(Db.ConnectionString);
        Assert.Equal(StorageServices.MaxAutoPrepare, builder.MaxAutoPrepare);
        Assert.Equal(StorageServices.AutoPrepareMinUsages, builder.AutoPrepareMinUsages);
        Assert.True(builder.NoResetOnClose);
    }

    [Fact]
    public async Task PreparedStatement_FailsOnceAndIsPreparedAnew_WhenAMigrationChangesItsResultType()
    {
        // Another node's migration can change a column's type under a statement prepared here: PostgreSQL refuses the old
        // plan once ("cached plan must not change result type"); Npgsql then forgets it, and the next run prepares anew.
        var table = "batchrunner.prepare_test_" + Guid.NewGuid().ToString("N")[..8];
        await using (var create = Db.CreateCommand($"create table {table} (v int4); insert into {table} values (7)")) await create.ExecuteNonQueryAsync();
        try
        {
            await using var conn = await Db.OpenConnectionAsync();
            var text = $"select v from {table}";
            async Task<object> ReadAsync()
            {
                await using var cmd = new NpgsqlCommand(text, conn);
                return (await cmd.ExecuteScalarAsync())!;
            }
            for (var i = 0; i < 3; i++) Assert.Equal(7, await ReadAsync());
            Assert.Equal(1, await PreparedAsync(conn, text));

            await using (var alter = Db.CreateCommand($"alter table {table} alter column v type int8")) await alter.ExecuteNonQueryAsync();

            var e = await Assert.ThrowsAsync<PostgresException>(ReadAsync);
            Assert.Equal(PostgresErrorCodes.FeatureNotSupported, e.SqlState);
            Assert.Equal(7L, await ReadAsync());
            Assert.Equal(7L, await ReadAsync());
        }
        finally
        {
            await using var drop = Db.CreateCommand($"drop table {table}");
            await drop.ExecuteNonQueryAsync();
        }
    }
}
