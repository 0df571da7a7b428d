using System.Diagnostics;
using System.Globalization;
using BatchRunner.Server.Storage;
using Hangfire;
using Hangfire.Common;
using Hangfire.PostgreSql;
using Hangfire.PostgreSql.Factories;
using Hangfire.Server;
using Hangfire.States;
using Hangfire.Storage;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;

namespace BatchRunner.Server.Tests.Storage;

/// <summary>
/// The round trips a job's Hangfire state changes save, on the fixture's real database, each in a fresh Hangfire schema
/// of its own: a state change commits in its job lock's own transaction (the lock ends with the commit, no rollback of
/// its own), and the worker's last state change removes the message it performed (Hangfire's transactional acknowledge),
/// against Hangfire.PostgreSql's own transactions (<c>BatchedTransactions = false</c>) doing the same work.
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class HangfireStateCommitFacts(ServerFixture f)
{
    private NpgsqlDataSource Db => f.App.Services.GetRequiredService<NpgsqlDataSource>();

    /// <summary>The texts of the round trips (Npgsql commands and batches) <paramref name="work"/> makes on this thread.</summary>
    private static List<string> Trips(Action work)
    {
        var trips = new List<string>();
        var thread = Environment.CurrentManagedThreadId;
        using var listener = new ActivityListener
        {
            ShouldListenTo = s => s.Name == "Npgsql",
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllData,
            ActivityStopped = a =>
            {
                // Statements and batches; a physical connection's opening ("CONNECT") is not one.
                if (Environment.CurrentManagedThreadId == thread && a.GetTagItem("db.query.text") is string text) lock (trips) trips.Add(text);
            },
        };
        ActivitySource.AddActivityListener(listener);
        work();
        return trips;
    }

    private async Task<long> ScalarAsync(string sql)
    {
        await using var cmd = Db.CreateCommand(sql);
        return Convert.ToInt64(await cmd.ExecuteScalarAsync());
    }

    private async Task<List<string>> StringsAsync(string sql)
    {
        await using var cmd = Db.CreateCommand(sql);
        await using var reader = await cmd.ExecuteReaderAsync();
        var values = new List<string>();
        while (await reader.ReadAsync()) values.Add(reader.GetString(0));
        return values;
    }

    [Fact]
    public async Task ChangeState_CommitsInItsJobLocksTransaction_OneRoundTripFewerThanTheLibrarysAndTheLockFreeAtOnce()
    {
        await using var stock = HangfireTestSchema.Create(Db, batched: false, "hfsc");
        await using var batched = HangfireTestSchema.Create(Db, batched: true, "hfsc");
        var counted = new Dictionary<bool, List<string>>();
        foreach (var schema in new[] { stock, batched })
        {
            // Seen from inside: whether the transaction that writes the state change's statistics counter holds an advisory
            // lock (the job's state lock) itself.
            await using (var cmd = Db.CreateCommand($"""
                create table "{schema.Name}".seen (holds_lock bool);
                create function "{schema.Name}".record_seen() returns trigger language plpgsql as $$
                begin
                    insert into "{schema.Name}".seen
                    select exists (select 1 from pg_locks where locktype = 'advisory' and pid = pg_backend_pid() and granted);
                    return new;
                end $$;
                create trigger record_seen after insert on "{schema.Name}".counter for each row execute function "{schema.Name}".record_seen();
                """))
                await cmd.ExecuteNonQueryAsync();
            var client = new BackgroundJobClient(schema.Storage);
            var job = client.Create(Job.FromExpression(() => ScenarioJobs.Noop("locked")), new EnqueuedState("hfsc"));
            Assert.True(client.ChangeState(job, HangfireTestSchema.Processing(), EnqueuedState.StateName));
            counted[schema == batched] = Trips(() => Assert.True(client.ChangeState(job, new SucceededState("r", 1, 2), ProcessingState.StateName)));

            // The lock ended with the change: another connection takes it at once.
            using (var other = schema.Storage.GetConnection())
                other.AcquireDistributedLock($"job:{job}:state-lock", TimeSpan.FromMilliseconds(200)).Dispose();
            using (var connection = schema.Storage.GetConnection())
                Assert.Equal(SucceededState.StateName, connection.GetJobData(job).State);
            // And its connection went back to the pool fit for use: further changes (each through a pooled connection) work.
            for (var i = 0; i < 3; i++)
            {
                Assert.True(client.ChangeState(job, new EnqueuedState("hfsc") { Reason = "again " + i }, SucceededState.StateName));
                Assert.True(client.ChangeState(job, new SucceededState("r", 1, 2), EnqueuedState.StateName));
            }
        }

        // Stock: the lock, the job's read, the library's statements one by one in a transaction of their own (then the lock's
        // rollback, which Npgsql does not trace).
        Assert.Equal(["false"], await StringsAsync($"select distinct holds_lock::text from \"{stock.Name}\".seen"));
        // Batched: the lock with the job's read, then one batch that runs the statements in the lock's transaction and
        // commits it.
        Assert.Equal(["true"], await StringsAsync($"select distinct holds_lock::text from \"{batched.Name}\".seen"));
        Assert.Equal(2, counted[true].Count);
        Assert.True(counted[false].Count >= counted[true].Count + 4, string.Join(" | ", counted[false]));
        // Nobody waits in a transaction on the schema's connections.
        Assert.Equal(0, await ScalarAsync($"select count(*) from pg_stat_activity where application_name = '{batched.Name}' and state like 'idle in transaction%'"));
    }

    [Fact]
    public async Task GetJobData_UnderTheJobsStateLock_IsTheLibrarysReadMadeWithTheLock()
    {
        await using var schema = HangfireTestSchema.Create(Db, batched: true, "hfsc");
        var client = new BackgroundJobClient(schema.Storage);
        var plain = client.Create(Job.FromExpression(() => ScenarioJobs.Noop("read")), new EnqueuedState("hfsc"));
        var unloadable = client.Create(Job.FromExpression(() => ScenarioJobs.Noop("gone")), new ScheduledState(TimeSpan.FromHours(1)));
        await using (var cmd = Db.CreateCommand($"update \"{schema.Name}\".job set invocationdata = replace(invocationdata::text, 'ScenarioJobs', 'NoSuchJobs')::jsonb where id = {unloadable}"))
            Assert.Equal(1, await cmd.ExecuteNonQueryAsync());
        var missing = "987654321";

        foreach (var id in new[] { plain, unloadable, missing })
        {
            JobData? library;
            using (var other = schema.Storage.GetConnection()) library = other.GetJobData(id);
            using var connection = schema.Storage.GetConnection();
            using var held = connection.AcquireDistributedLock($"job:{id}:state-lock", TimeSpan.FromSeconds(5));
            JobData? read = null;
            Assert.Empty(Trips(() => read = connection.GetJobData(id)));
            if (library is null)
            {
                Assert.Null(read);
            }
            else
            {
                Assert.NotNull(read);
                Assert.Equal((library.State, library.CreatedAt, library.CreatedAt.Kind), (read.State, read.CreatedAt, read.CreatedAt.Kind));
                Assert.Equal(library.Job?.Type, read.Job?.Type);
                Assert.Equal(library.Job?.Method, read.Job?.Method);
                Assert.Equal(library.Job?.Args, read.Job?.Args);
                Assert.Equal(library.LoadException?.GetType(), read.LoadException?.GetType());
                Assert.Equal(library.LoadException?.Message, read.LoadException?.Message);
            }
            // Handed out once: a second read is the library's own.
            Assert.Single(Trips(() => connection.GetJobData(id)));
        }
        Assert.NotNull(schema.Storage.GetConnection().GetJobData(unloadable).LoadException);

        // Without the lock, or once it is released, every read is the library's.
        using (var connection = schema.Storage.GetConnection())
        {
            Assert.Single(Trips(() => connection.GetJobData(plain)));
            connection.AcquireDistributedLock($"job:{plain}:state-lock", TimeSpan.FromSeconds(5)).Dispose();
            Assert.Single(Trips(() => connection.GetJobData(plain)));
        }
    }

    [Fact]
    public void CommitWith_WritesNothingAndFreesTheLock_WhenAStatementFails()
    {
        var locks = new HangfireTransactionLocks(new NpgsqlConnectionFactory(Db.ConnectionString, new PostgreSqlStorageOptions()), new PostgreSqlStorageOptions());
        var table = "hfsc_commit_" + Guid.NewGuid().ToString("N")[..8];
        using (var create = Db.CreateCommand($"create table public.{table} (v int)")) create.ExecuteNonQuery();
        try
        {
            var resource = "hfsc-" + table;
            var held = locks.Acquire(resource, TimeSpan.FromSeconds(5));
            Assert.ThrowsAny<PostgresException>(() => held.CommitWith(
                [new NpgsqlBatchCommand($"insert into public.{table} values (1)"), new NpgsqlBatchCommand("select 1 / 0")], 30));
            locks.Acquire(resource, TimeSpan.FromMilliseconds(200)).CommitWith([new NpgsqlBatchCommand($"insert into public.{table} values (2)")], 30);
            using var read = Db.CreateCommand($"select string_agg(v::text, ',') from public.{table}");
            Assert.Equal("2", read.ExecuteScalar());
            // Free again after the commit, and the disposal of a committed lock does nothing.
            locks.Acquire(resource, TimeSpan.FromMilliseconds(200)).Dispose();
            held.Dispose();
        }
        finally
        {
            using var drop = Db.CreateCommand($"drop table public.{table}");
            drop.ExecuteNonQuery();
        }
    }

    private sealed class EveryTurn : IFetchPolicy
    {
        public FetchTurn? Last { get; private set; }

        public FetchTurn WaitForTurn(CancellationToken ct) => Last = new(_ => { }, () => { }, _ => { });
        public IReadOnlyList<string> Order(IReadOnlyList<string> queues) => queues;
        public long[] Skipped() => [];
    }

    [Fact]
    public async Task Fetch_ReadsTheJobItDelivers_AsTheExecutorsReadDoes_InTheFetchsRoundTrip()
    {
        await using var schema = HangfireTestSchema.Create(Db, batched: true, "hfsc");
        var policy = new EveryTurn();
        using var provider = new FairShareQueueProvider(schema.Storage, schema.Options, Db, f.App.Services.GetRequiredService<SessionConnections>(), policy);
        var store = f.App.Services.GetRequiredService<JobStore>();
        // A stored job with secrets, and a message delivering it (no worker fetches this schema).
        var spec = BatchRunner.Core.JobSpecValidator.Validate(new BatchRunner.Core.JobSubmission
        {
            Image = f.Busybox, Command = ["true"], Name = "fetched",
        }).Spec!;
        var record = JobRecord.New(spec) with { ProtectedSecrets = [1, 2, 3] };
        await using (var conn = await Db.OpenConnectionAsync())
        await using (var tx = await conn.BeginTransactionAsync())
        {
            Assert.True(await JobStore.InsertRowsAsync(conn, tx, record, CancellationToken.None));
            await tx.CommitAsync();
        }
        var id = record.Id;
        new BackgroundJobClient(schema.Storage).Create(Job.FromExpression<IJobPerformer>(p => p.RunAsync(id, "fetched", CancellationToken.None)), new EnqueuedState("hfsc"));

        List<string> trips = [];
        IFetchedJob? fetched = null;
        trips = Trips(() => fetched = provider.GetJobQueue().Dequeue(["hfsc"], CancellationToken.None));
        using (fetched)
        {
            Assert.Single(trips);
            var read = policy.Last!.FetchedJob;
            Assert.NotNull(read);
            var expected = await store.GetForAttemptAsync(id, CancellationToken.None);
            Assert.True(read.HasSecrets);
            Assert.Equal(System.Text.Json.JsonSerializer.Serialize(expected), System.Text.Json.JsonSerializer.Serialize(read));
        }
        await store.RequestCancelAsync(id, tenant: null, CancellationToken.None);
    }

    [Fact]
    public async Task Worker_RemovesThePerformedMessageInItsLastStateChange_WithoutARoundTripOfItsOwn()
    {
        await using var stock = HangfireTestSchema.Create(Db, batched: false, "hfsc");
        await using var batched = HangfireTestSchema.Create(Db, batched: true, "hfsc");
        Assert.True(batched.Storage.HasFeature(HangfireStorage.TransactionalAcknowledge));
        Assert.False(stock.Storage.HasFeature(HangfireStorage.TransactionalAcknowledge));
        Assert.True(FairShareQueueProvider.TurnFetchedJob.CanRemoveWithin);

        var trips = new Dictionary<bool, List<string>>();
        foreach (var schema in new[] { stock, batched })
        {
            using var provider = new FairShareQueueProvider(schema.Storage, schema.Options, Db, f.App.Services.GetRequiredService<SessionConnections>(), new EveryTurn());
            schema.Storage.QueueProviders.Add(provider, ["hfsc"]);
            var job = new BackgroundJobClient(schema.Storage).Create(Job.FromExpression(() => ScenarioJobs.Noop("performed")), new EnqueuedState("hfsc"));

            // Hangfire's own worker, once: fetch, Processing, perform, Succeeded, acknowledge. With an activator of its own:
            // JobActivator.Current is process-wide, and the last host that set it (another fixture's) may be disposed.
            var worker = new Worker(["hfsc"], new BackgroundJobPerformer(JobFilterProviders.Providers, new JobActivator()), new BackgroundJobStateChanger());
            using var stop = new CancellationTokenSource();
            var context = new BackgroundProcessContext("server-1", schema.Storage, new Dictionary<string, object>(), Guid.NewGuid(), stop.Token, stop.Token, stop.Token);
            trips[schema == batched] = Trips(() => worker.Execute(context));

            using (var connection = schema.Storage.GetConnection())
                Assert.Equal(SucceededState.StateName, connection.GetJobData(job).State);
            Assert.Equal(0, await ScalarAsync($"select count(*) from \"{schema.Name}\".jobqueue"));
        }

        static bool IsOwnRemoval(string trip) => trip.TrimStart().StartsWith("DELETE FROM", StringComparison.Ordinal) && trip.Contains("\"jobqueue\"", StringComparison.Ordinal);
        Assert.Contains(trips[false], IsOwnRemoval);
        Assert.DoesNotContain(trips[true], IsOwnRemoval);
        Assert.True(trips[true].Count <= trips[false].Count - 3, $"{trips[true].Count} against {trips[false].Count}: {string.Join(" | ", trips[true])}");
    }
}
