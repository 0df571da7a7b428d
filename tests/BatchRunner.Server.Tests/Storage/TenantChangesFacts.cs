using BatchRunner.Server.Storage;
using BatchRunner.Testing;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;

namespace BatchRunner.Server.Tests.Storage;

/// <summary>
/// A tenant made anywhere is heard by the fetching worker's LISTEN connection (<see cref="TenantChanges"/>, migration
/// 0106's trigger), whichever way it is made: an API key for a new tenant, a PUT of a new tenant, SQL by hand. Fair share
/// rests on it to skip reading the tenants while there is one (<c>FairShare.Order</c>).
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class TenantChangesFacts(ServerFixture f)
{
    private NpgsqlDataSource Db => f.App.Services.GetRequiredService<NpgsqlDataSource>();

    private sealed class NoTurns : IFetchPolicy
    {
        public FetchTurn WaitForTurn(CancellationToken ct) => throw new InvalidOperationException("nothing fetches here");
        public IReadOnlyList<string> Order(IReadOnlyList<string> queues) => queues;
        public long[] Skipped() => [];
    }

    [Fact]
    public async Task ATenantMade_ByAKey_ByAPut_OrBySql_IsHeard_WhileAnUpdateOfOneIsNot()
    {
        await using var schema = HangfireTestSchema.Create(Db, batched: true, "tch");
        var changes = new TenantChanges();
        using var provider = new FairShareQueueProvider(schema.Storage, schema.Options, Db, f.App.Services.GetRequiredService<SessionConnections>(), new NoTurns(), changes);
        Assert.Equal(-1, changes.Mark());
        provider.EnsureListening();
        await Poll.UntilAsync(() => Task.FromResult(changes.Mark()), m => m >= 0, TimeSpan.FromSeconds(10), "the LISTEN in place", 20);

        async Task HeardAsync(string how, Func<Task> make)
        {
            var mark = changes.Mark();
            Assert.True(changes.Unchanged(mark));
            await make();
            await Poll.UntilAsync(() => Task.FromResult(changes.Unchanged(mark)), same => !same, TimeSpan.FromSeconds(5), $"a tenant made {how} heard", 20);
        }

        await HeardAsync("by a key", () => f.Api.CreateKeyAsync("tch-" + Guid.NewGuid().ToString("N")[..8], "user"));
        var put = "tch-" + Guid.NewGuid().ToString("N")[..8];
        await HeardAsync("by a PUT", () => f.Api.PutTenantAsync(put, new { weight = 2 }));
        await HeardAsync("by SQL", async () =>
        {
            await using var cmd = Db.CreateCommand("insert into batchrunner.tenants (name) values (@n)");
            cmd.Parameters.AddWithValue("n", "tch-" + Guid.NewGuid().ToString("N")[..8]);
            await cmd.ExecuteNonQueryAsync();
        });

        // A quota changed is not a tenant made: fair share reads the tenants anyway when there is more than one.
        var before = changes.Mark();
        await f.Api.PutTenantAsync(put, new { weight = 3 });
        await f.Api.CreateKeyAsync(put, "user");
        await Task.Delay(300);
        Assert.True(changes.Unchanged(before));
    }
}
