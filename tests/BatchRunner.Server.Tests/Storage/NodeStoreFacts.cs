using BatchRunner.Server.Storage;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;

namespace BatchRunner.Server.Tests.Storage;

/// <summary><see cref="NodeStore"/>'s heartbeat on the fixture's real database, through a data source of the test's own.</summary>
[Collection(ServerCollection.Name)]
public sealed class NodeStoreFacts(ServerFixture f)
{
    private NpgsqlDataSource Db => f.App.Services.GetRequiredService<NpgsqlDataSource>();

    [Fact]
    public async Task Heartbeat_Succeeds_WhenThePooledConnectionItWouldUseWasEndedByTheServer()
    {
        // As after a database restart: the pool's idle connection is dead, the database answers. A heartbeat that failed
        // there counted towards fencing the node (found restarting PostgreSQL under load).
        var app = "nodestore-facts-" + Guid.NewGuid().ToString("N")[..8];
        var name = "heartbeat-" + app;
        await using var own = NpgsqlDataSource.Create(new NpgsqlConnectionStringBuilder(Db.ConnectionString) { ApplicationName = app, MaxPoolSize = 1 }.ConnectionString);
        var store = new NodeStore(own);
        var instance = Guid.NewGuid();
        try
        {
            await store.RegisterAsync(name, instance, new Dictionary<string, string>(), new NodeCapacity(1, 1L << 30, 0), ["default"], TimeSpan.FromSeconds(3), CancellationToken.None);
            Assert.True(await store.HeartbeatAsync(name, instance, CancellationToken.None));

            await using (var end = Db.CreateCommand("select count(*) from (select pg_terminate_backend(pid) from pg_stat_activity where application_name = $1) t"))
            {
                end.Parameters.Add(new NpgsqlParameter { Value = app });
                Assert.Equal(1L, await end.ExecuteScalarAsync());
            }
            await BatchRunner.Testing.Poll.UntilAsync(() => CountAsync(app), n => n == 0, TimeSpan.FromSeconds(10), "the pooled connection's backend to end", 20);

            Assert.True(await store.HeartbeatAsync(name, instance, CancellationToken.None));
            Assert.True(await store.HeartbeatAsync(name, instance, CancellationToken.None));
        }
        finally
        {
            await using var remove = Db.CreateCommand("delete from batchrunner.nodes where name = $1");
            remove.Parameters.Add(new NpgsqlParameter { Value = name });
            await remove.ExecuteNonQueryAsync();
        }
    }

    private async Task<long> CountAsync(string app)
    {
        await using var cmd = Db.CreateCommand("select count(*) from pg_stat_activity where application_name = $1");
        cmd.Parameters.Add(new NpgsqlParameter { Value = app });
        return (long)(await cmd.ExecuteScalarAsync())!;
    }
}
