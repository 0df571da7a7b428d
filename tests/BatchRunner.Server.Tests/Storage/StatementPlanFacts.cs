using BatchRunner.Server.Storage;
using BatchRunner.Server.Tests.Workflows;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;

namespace BatchRunner.Server.Tests.Storage;

/// <summary>
/// What PostgreSQL does with the statements a trivial job's requests run most often (issue 14's database CPU), read from
/// PostgreSQL itself on the fixture's database: its prepared statements' plan counts and EXPLAIN ANALYZE.
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class StatementPlanFacts(ServerFixture f)
{
    /// <summary>Prepares <paramref name="sql"/> on a connection of its own (as Npgsql's automatic preparation does), runs it
    /// <paramref name="times"/> times, and returns PostgreSQL's count of generic and custom plans made for it.</summary>
    private async Task<(long Generic, long Custom)> PlansAsync(string sql, Action<NpgsqlParameterCollection> bind, int times = 10)
    {
        var shared = f.App.Services.GetRequiredService<NpgsqlDataSource>();
        await using var db = new NpgsqlDataSourceBuilder(shared.ConnectionString).Build();
        await using var connection = await db.OpenConnectionAsync();
        await using (var cmd = new NpgsqlCommand(sql, connection))
        {
            bind(cmd.Parameters);
            await cmd.PrepareAsync();
            for (var i = 0; i < times; i++)
                await using (var rd = await cmd.ExecuteReaderAsync())
                    while (await rd.ReadAsync()) { }
        }
        // The protocol-level statement Npgsql prepared is listed with the others of this session.
        await using var plans = new NpgsqlCommand("select generic_plans, custom_plans from pg_prepared_statements where not from_sql", connection);
        await using var r = await plans.ExecuteReaderAsync();
        Assert.True(await r.ReadAsync());
        return (r.GetInt64(0), r.GetInt64(1));
    }

    [Fact]
    public async Task ADocumentsLivenessAndChildCounts_KeepTheirGenericPlan_NotPlannedAtEachRead()
    {
        var id = Guid.Parse(await f.Api.SubmitIdAsync(new { image = f.Busybox, command = new[] { "true" } }));
        await f.Api.WaitForFinalAsync(id.ToString());

        // PostgreSQL plans a prepared statement afresh for its first five executions, then keeps the generic plan when it
        // costs no more than those did. A one-element array (= any($1)) never passes that test: planned at every read.
        foreach (var sql in new[] { JobNodeLiveness.OneSql, JobStore.OneChildCountsSql })
        {
            var (generic, custom) = await PlansAsync(sql, p => p.AddWithValue("id", id));
            Assert.True(custom <= 5 && generic >= 5, $"{sql}: {generic} generic and {custom} custom plans");
        }
        // The lists' form, with many ids, is what the document's no longer uses for one.
        var (_, listCustom) = await PlansAsync(JobNodeLiveness.Sql, p => p.AddWithValue("ids", new[] { id }));
        Assert.Equal(10, listCustom);
    }
}

/// <summary>Fair share's read of the tenants' running sums on a database of its own (one tenant, as a fresh install has).</summary>
[Collection(FreshServerCollection.Name)]
public sealed class FairShareSumsFacts(FreshServerFixture f)
{
    private static async Task<List<(string Name, long Jobs, double Cpus)>> SharesAsync(NpgsqlConnection connection, NpgsqlTransaction tx)
    {
        await using var cmd = new NpgsqlCommand(TenantStore.SharesSql, connection, tx);
        cmd.Parameters.AddWithValue("x", Array.Empty<Guid>());
        var rows = new List<(string, long, double)>();
        await using var rd = await cmd.ExecuteReaderAsync();
        while (await rd.ReadAsync()) rows.Add((rd.GetString(0), rd.GetInt64(8), rd.GetDouble(9)));
        return rows;
    }

    [Fact]
    public async Task RunningSums_AreNotRead_WhileThereIsOneTenant_AndAreWhenThereAreTwo()
    {
        var db = f.App.Services.GetRequiredService<NpgsqlDataSource>();
        await using var connection = await db.OpenConnectionAsync();
        // Everything here is rolled back: the fixture's other tests see none of it.
        await using var tx = await connection.BeginTransactionAsync();
        async Task ExecAsync(string sql)
        {
            await using var cmd = new NpgsqlCommand(sql, connection, tx);
            await cmd.ExecuteNonQueryAsync();
        }
        await ExecAsync("""
            insert into batchrunner.jobs (id, image, queue, spec, state, created_at, tenant)
            values (gen_random_uuid(), 'busybox', 'default', '{"resources": {"cpus": 0.5, "memoryBytes": 1048576}}', 'running', now(), 'default')
            """);

        Assert.Equal([("default", 0L, 0.0)], await SharesAsync(connection, tx));
        await using (var explain = new NpgsqlCommand("explain (analyze, costs off, timing off) " + TenantStore.SharesSql, connection, tx))
        {
            explain.Parameters.AddWithValue("x", Array.Empty<Guid>());
            var plan = new List<string>();
            await using var rd = await explain.ExecuteReaderAsync();
            while (await rd.ReadAsync()) plan.Add(rd.GetString(0));
            // The scan of the tenant's jobs is never run.
            var scan = Assert.Single(plan, l => l.Contains(" on jobs j", StringComparison.Ordinal));
            Assert.True(scan.Contains("never executed", StringComparison.Ordinal), string.Join('\n', plan));
        }

        await ExecAsync("insert into batchrunner.tenants (name) values ('shares-second')");
        var two = await SharesAsync(connection, tx);
        Assert.Equal([("default", 1L, 0.5), ("shares-second", 0L, 0.0)], two);
        await tx.RollbackAsync();
    }

    [Fact]
    public async Task TheRead_KeepsItsGenericPlan_WhenManyJobsRun()
    {
        // Read at every fetch, with the jobs fetched and not yet begun left out (an array of a few ids). Left out with
        // "<> all(@x)", whose generic plan PostgreSQL costs for ten elements, it was planned afresh at every fetch once many
        // jobs ran: the ten elements' cost, over the running jobs the planner expects, outweighed planning anew.
        // A connection of its own: a pooled one may hold other prepared statements (Npgsql's automatic preparation).
        await using var db = new NpgsqlDataSourceBuilder(f.App.Services.GetRequiredService<NpgsqlDataSource>().ConnectionString).Build();
        await using var connection = await db.OpenConnectionAsync();
        await using var tx = await connection.BeginTransactionAsync();
        await using (var fill = new NpgsqlCommand("""
            insert into batchrunner.jobs (id, image, queue, spec, state, created_at, tenant)
            select gen_random_uuid(), 'busybox', 'default', '{"resources": {"cpus": 0.1, "memoryBytes": 1048576}}', 'running', now(), 'default'
              from generate_series(1, 5000);
            analyze batchrunner.jobs;
            """, connection, tx))
            await fill.ExecuteNonQueryAsync();
        await using (var cmd = new NpgsqlCommand(TenantStore.SharesSql, connection, tx))
        {
            cmd.Parameters.AddWithValue("x", new[] { Guid.NewGuid() });
            await cmd.PrepareAsync();
            for (var i = 0; i < 10; i++)
                await using (var rd = await cmd.ExecuteReaderAsync())
                    while (await rd.ReadAsync()) { }
        }
        await using var plans = new NpgsqlCommand("select generic_plans, custom_plans from pg_prepared_statements where not from_sql and statement like '%array_position%'", connection, tx);
        await using (var r = await plans.ExecuteReaderAsync())
        {
            Assert.True(await r.ReadAsync());
            var (generic, custom) = (r.GetInt64(0), r.GetInt64(1));
            Assert.True(custom <= 5 && generic >= 5, $"{generic} generic and {custom} custom plans");
        }
        await tx.RollbackAsync();
    }
}
