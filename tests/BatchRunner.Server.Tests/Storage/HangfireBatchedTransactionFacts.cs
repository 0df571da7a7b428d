using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using BatchRunner.Server.Storage;
using Hangfire;
using Hangfire.Common;
using Hangfire.PostgreSql;
using Hangfire.PostgreSql.Factories;
using Hangfire.States;
using Hangfire.Storage;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;

namespace BatchRunner.Server.Tests.Storage;

/// <summary>
/// Hangfire's write transactions committed in one round trip (<see cref="HangfireBatchedTransaction"/>), against
/// Hangfire.PostgreSql's own transaction on the fixture's real database: each runs the same Hangfire work (job
/// transitions through Hangfire's state machine and filters, a recurring job, every operation of a transaction) in a
/// fresh Hangfire schema of its own, and the two schemas' tables must come out the same.
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class HangfireBatchedTransactionFacts(ServerFixture f)
{
    /// <summary>Times may differ by the scenario's own duration (the two run one after the other) and by the random part
    /// of AutomaticRetry's back-off (up to 30 s); a wrong expiry (an hour, a day) is far beyond it.</summary>
    private const double TimeToleranceSeconds = 60;

    private static readonly string[] Tables = ["job", "state", "jobparameter", "jobqueue", "counter", "aggregatedcounter", "set", "list", "hash"];

    private NpgsqlDataSource Db => f.App.Services.GetRequiredService<NpgsqlDataSource>();

    /// <summary>Hangfire's work for the comparison: what a BatchRunner job's life and the dashboard cause, and a recurring job.</summary>
    private static void RunScenario(JobStorage storage)
    {
        var client = new BackgroundJobClient(storage);
        string[] processing = [ProcessingState.StateName];

        // Enqueued -> Processing -> Succeeded.
        var succeeded = client.Create(Job.FromExpression(() => ScenarioJobs.Noop("succeeded")), new EnqueuedState("p4hf"));
        Assert.True(client.ChangeState(succeeded, HangfireTestSchema.Processing("server-1", "worker-1"), EnqueuedState.StateName));
        Assert.True(client.ChangeState(succeeded, new SucceededState("result", 5, 7) { Reason = "done" }, ProcessingState.StateName));

        // Failed with a retry (AutomaticRetry elects Scheduled and records the Failed state beside it), then deleted.
        var retried = client.Create(Job.FromExpression(() => ScenarioJobs.Noop("retried")), new EnqueuedState("p4hf"));
        Assert.True(client.ChangeState(retried, HangfireTestSchema.Processing("server-1", "worker-2"), EnqueuedState.StateName));
        // False: the state applied is not the one asked for (Scheduled instead of Failed).
        Assert.False(client.ChangeState(retried, new FailedState(Failure, "server-1"), ProcessingState.StateName));
        using (var connection = storage.GetConnection())
            Assert.Equal(ScheduledState.StateName, connection.GetJobData(retried).State);
        Assert.True(client.ChangeState(retried, new DeletedState(), ScheduledState.StateName));

        // Failed for good (a failure with no retries left is final, as BatchRunner's own are), then requeued from the dashboard.
        var failed = client.Create(Job.FromExpression(() => ScenarioJobs.Noop("failed")), new EnqueuedState("p4hf"));
        Assert.True(client.ChangeState(failed, HangfireTestSchema.Processing("server-1", "worker-3"), EnqueuedState.StateName));
        using (var connection = storage.GetConnection())
            connection.SetJobParameter(failed, "RetryCount", "10");
        Assert.True(client.ChangeState(failed, new FailedState(Failure, "server-1"), ProcessingState.StateName));
        Assert.True(client.ChangeState(failed, new EnqueuedState("p4hf") { Reason = "requeued" }, FailedState.StateName));

        // Deleted while enqueued; an awaiting and a scheduled job.
        var deleted = client.Create(Job.FromExpression(() => ScenarioJobs.Noop("deleted")), new EnqueuedState("p4hf-other"));
        Assert.True(client.Delete(deleted));
        client.Create(Job.FromExpression(() => ScenarioJobs.Noop("awaiting")), new AwaitingState(succeeded, new EnqueuedState("p4hf"), JobContinuationOptions.OnAnyFinishedState));
        client.Create(Job.FromExpression(() => ScenarioJobs.Noop("scheduled")), new ScheduledState(TimeSpan.FromHours(2)));

        // A recurring job: registered, triggered (its job enqueued, its hash updated), another registered and removed.
        var recurring = new RecurringJobManager(storage);
        recurring.AddOrUpdate("p4hf-recurring", Job.FromExpression(() => ScenarioJobs.Noop("recurring")), "0 0 * * *", new RecurringJobOptions { TimeZone = TimeZoneInfo.Utc });
        recurring.Trigger("p4hf-recurring");
        recurring.AddOrUpdate("p4hf-removed", Job.FromExpression(() => ScenarioJobs.Noop("removed")), "0 * * * *", new RecurringJobOptions { TimeZone = TimeZoneInfo.Utc });
        recurring.RemoveIfExists("p4hf-removed");

        // Every operation of a transaction, twice where the second takes another path (an update instead of an insert).
        using (var connection = storage.GetConnection())
        {
            for (var round = 0; round < 2; round++)
            {
                using var tx = (JobStorageTransaction)connection.CreateWriteTransaction();
                tx.IncrementCounter("c:plain");
                tx.IncrementCounter("c:expiring", TimeSpan.FromHours(1));
                tx.DecrementCounter("c:plain");
                tx.DecrementCounter("c:expiring-down", TimeSpan.FromDays(2));
                tx.AddToSet("s:one", "a");
                tx.AddToSet("s:one", "b", 2.5 + round);
                tx.AddRangeToSet("s:range-" + round, ["x", "y", "z"]);
                tx.RemoveFromSet("s:one", "a");
                tx.ExpireSet("s:one", TimeSpan.FromHours(3));
                tx.PersistSet("s:range-0");
                tx.RemoveSet("s:range-1");
                foreach (var v in new[] { "a", "b", "c", "d" }) tx.InsertToList("l:one", v + round);
                tx.RemoveFromList("l:one", "b" + round);
                tx.TrimList("l:one", 1, 3);
                tx.ExpireList("l:one", TimeSpan.FromMinutes(30));
                if (round == 1) tx.PersistList("l:one");
                tx.SetRangeInHash("h:one", [new("f1", "v1-" + round), new("f2", "v2")]);
                tx.SetRangeInHash("h:two", [new("g", "x")]);
                tx.ExpireHash("h:one", TimeSpan.FromHours(4));
                if (round == 1) tx.PersistHash("h:one");
                if (round == 1) tx.RemoveHash("h:two");
                tx.ExpireJob(succeeded, TimeSpan.FromHours(5));
                tx.PersistJob(failed);
                tx.AddJobState(succeeded, HangfireTestSchema.Processing("server-2", "worker-" + round));
                tx.SetJobState(deleted, new DeletedState { Reason = "again " + round });
                tx.AddToQueue("p4hf-direct", succeeded);
                tx.Commit();
            }
        }
    }

    private static readonly Exception Failure = new InvalidOperationException("the scenario's failure");

    [Fact]
    public async Task Commit_LeavesHangfiresTablesAsTheLibrarysTransactionDoes_ForJobTransitionsRecurringJobsAndEveryOperation()
    {
        await using var stock = HangfireTestSchema.Create(Db, batched: false, "p4hf");
        await using var batched = HangfireTestSchema.Create(Db, batched: true, "p4hf");

        RunScenario(stock.Storage);
        RunScenario(batched.Storage);

        foreach (var table in Tables)
        {
            var expected = await DumpAsync(stock.Name, table);
            var actual = await DumpAsync(batched.Name, table);
            Assert.True(expected.Count > 0 || table == "aggregatedcounter", $"the scenario wrote no {table} row");
            Assert.Equal(expected.Count, actual.Count);
            for (var row = 0; row < expected.Count; row++)
                for (var column = 0; column < expected[row].Length; column++)
                    AssertSame(expected[row][column], actual[row][column], $"{table} row {row} column {column}");
        }
    }

    [Fact]
    public async Task Commit_WritesNothingAndThrows_WhenAStatementInTheMiddleFails()
    {
        await using var schema = HangfireTestSchema.Create(Db, batched: true, "p4hf");
        using var connection = schema.Storage.GetConnection();
        var job = new BackgroundJobClient(schema.Storage).Create(Job.FromExpression(() => ScenarioJobs.Noop("atomic")), new EnqueuedState("p4hf"));

        using (var tx = connection.CreateWriteTransaction())
        {
            Assert.IsType<HangfireBatchedTransaction>(tx);
            tx.IncrementCounter("c:before");
            tx.SetJobState(job, new DeletedState());
            // A state of a job that does not exist: the foreign key fails this statement, after two that succeeded.
            tx.AddJobState("987654321", new DeletedState());
            tx.IncrementCounter("c:after");
            var e = Assert.ThrowsAny<PostgresException>(tx.Commit);
            Assert.Equal(PostgresErrorCodes.ForeignKeyViolation, e.SqlState);
        }

        Assert.Equal(0, await ScalarAsync($"select count(*) from \"{schema.Name}\".counter"));
        Assert.Equal(EnqueuedState.StateName, connection.GetJobData(job).State);
        Assert.Equal(1, await ScalarAsync($"select count(*) from \"{schema.Name}\".state where jobid = {job}"));
        // The connection went back to the pool out of its failed transaction: the next commit works.
        using (var tx = connection.CreateWriteTransaction())
        {
            tx.IncrementCounter("c:next");
            tx.Commit();
        }
        Assert.Equal(1, await ScalarAsync($"select count(*) from \"{schema.Name}\".counter where key = 'c:next'"));
    }

    [Fact]
    public async Task Commit_TakesOneRoundTripForTheLibrarysStatements_WhereTheLibrarysTakesOnePerStatement()
    {
        await using var stock = HangfireTestSchema.Create(Db, batched: false, "p4hf");
        await using var batched = HangfireTestSchema.Create(Db, batched: true, "p4hf");

        // A job's Succeeded transition: the state, expiry, counters, as Hangfire's state machine writes them.
        var (stockTrips, stockStatements, _) = CountSucceededTransition(stock.Storage);
        var (batchedTrips, _, recorded) = CountSucceededTransition(batched.Storage);

        Assert.True(stockStatements.Count >= 4, $"{stockStatements.Count} statements");
        Assert.Equal(stockStatements.Count, stockTrips);
        Assert.Equal(1, batchedTrips);
        // The statements of the one batch, between its BEGIN and COMMIT, are the library's, byte for byte as its Dapper code
        // gave them to Npgsql (which renames the parameters $1, $2... for both alike).
        Assert.Equal(stockStatements.Select(Schemaless(stock.Name)), recorded!.Select(Schemaless(batched.Name)));
    }

    private static Func<string, string> Schemaless(string schema) => sql => sql.Replace($"\"{schema}\"", "\"SCHEMA\"", StringComparison.Ordinal);

    /// <summary>Round trips (Npgsql commands and batches) of the transaction's commit alone, the statement texts Npgsql
    /// reported for them, and the statements recorded (a batched transaction's).</summary>
    private static (int RoundTrips, List<string> Statements, List<string>? Recorded) CountSucceededTransition(JobStorage storage)
    {
        var client = new BackgroundJobClient(storage);
        var job = client.Create(Job.FromExpression(() => ScenarioJobs.Noop("counted")), new EnqueuedState("p4hf"));
        Assert.True(client.ChangeState(job, HangfireTestSchema.Processing("server-1", "worker-1"), EnqueuedState.StateName));

        using var connection = storage.GetConnection();
        using var tx = connection.CreateWriteTransaction();
        var context = new ApplyStateContext(storage, connection, tx, new BackgroundJob(job, Job.FromExpression(() => ScenarioJobs.Noop("counted")), DateTime.UtcNow),
            new SucceededState("result", 5, 7), ProcessingState.StateName);
        new StateMachine(JobFilterProviders.Providers).ApplyState(context);
        var recorded = (tx as HangfireBatchedTransaction)?.Record()?.Select(c => c.Text).ToList();

        var trips = 0;
        var statements = new List<string>();
        var thread = Environment.CurrentManagedThreadId;
        using var listener = new ActivityListener
        {
            ShouldListenTo = s => s.Name == "Npgsql",
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllData,
            // The commit runs on this thread: other tests' work (other threads) is not counted.
            ActivityStopped = a =>
            {
                if (Environment.CurrentManagedThreadId != thread) return;
                trips++;
                statements.Add(a.GetTagItem("db.query.text") as string ?? "");
            },
        };
        ActivitySource.AddActivityListener(listener);
        tx.Commit();
        return (trips, statements, recorded);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Commit_RunsItsStatementsInOneReadCommittedTransaction_WhateverTheSessionsDefaultIsolation(bool batched)
    {
        // The library's transaction scope asks for read committed; the batch says so in its BEGIN. Seen from inside: a
        // trigger on the counter table records the isolation and the transaction of each statement.
        await using var schema = HangfireTestSchema.Create(Db, batched, "p4hf", sessionOptions: "-c default_transaction_isolation=serializable");
        await using (var cmd = Db.CreateCommand($"""
            create table "{schema.Name}".seen (isolation text, xid int8);
            create function "{schema.Name}".record_seen() returns trigger language plpgsql as $$
            begin
                insert into "{schema.Name}".seen values (current_setting('transaction_isolation'), txid_current());
                return new;
            end $$;
            create trigger record_seen after insert on "{schema.Name}".counter for each row execute function "{schema.Name}".record_seen();
            """))
            await cmd.ExecuteNonQueryAsync();
        using var connection = schema.Storage.GetConnection();

        // A few times, so that Npgsql's automatic preparation (after two uses) has prepared the batch's statements.
        for (var i = 0; i < 4; i++)
        {
            using var tx = connection.CreateWriteTransaction();
            Assert.Equal(batched, tx is HangfireBatchedTransaction);
            tx.IncrementCounter("c:one");
            tx.IncrementCounter("c:two", TimeSpan.FromHours(1));
            tx.Commit();
        }

        Assert.Equal(["read committed"], await StringsAsync($"select distinct isolation from \"{schema.Name}\".seen"));
        Assert.Equal(4, await ScalarAsync($"select count(distinct xid) from \"{schema.Name}\".seen"));
        Assert.Equal(8, await ScalarAsync($"select count(*) from \"{schema.Name}\".seen"));
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
    public async Task Commit_EnqueuesWithTheLibrarysInsertAndNotify_AndSignalsTheQueueInThisProcessOnlyOnceCommitted()
    {
        await using var schema = HangfireTestSchema.Create(Db, batched: true, "p4hf");
        using var connection = schema.Storage.GetConnection();
        var job = new BackgroundJobClient(schema.Storage).Create(Job.FromExpression(() => ScenarioJobs.Noop("enqueued")), new ScheduledState(TimeSpan.FromHours(1)));
        var queue = "p4hf-" + Guid.NewGuid().ToString("N")[..8];
        // Hangfire.PostgreSql's in-process wake-up of its own fetchers of that queue.
        var registry = (Hangfire.PostgreSql.Utils.AutoResetEventRegistry)typeof(PostgreSqlJobQueue)
            .GetField("_queueEventRegistry", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Static)!.GetValue(null)!;
        var signalled = registry.GetWaitHandles([queue]).Single();

        using (var failing = (HangfireBatchedTransaction)connection.CreateWriteTransaction())
        {
            failing.AddToQueue(queue, job);
            failing.AddJobState("987654321", new DeletedState());
            Assert.ThrowsAny<PostgresException>(failing.Commit);
        }
        Assert.False(signalled.WaitOne(0));
        Assert.Equal(0, await ScalarAsync($"select count(*) from \"{schema.Name}\".jobqueue where queue = '{queue}'"));

        using (var tx = (HangfireBatchedTransaction)connection.CreateWriteTransaction())
        {
            tx.AddToQueue(queue, job);
            // Recorded from the queue's own code (its Dapper.AOT path), not left to the library's commit.
            Assert.Equal(2, tx.Record()!.Count);
            Assert.Contains("\"jobqueue\" (\"jobid\", \"queue\")", tx.Record()![0].Text);
            Assert.Equal("NOTIFY new_job", tx.Record()![1].Text);
            // The queue's code (Dapper.AOT) sets the command timeout 0, no limit as Npgsql reads it: so the batch has none.
            Assert.Equal([0, 0], tx.Record()!.Select(c => c.TimeoutSeconds));
            tx.Commit();
        }
        Assert.True(signalled.WaitOne(0));
        Assert.Equal(1, await ScalarAsync($"select count(*) from \"{schema.Name}\".jobqueue where queue = '{queue}' and jobid = {job} and fetchedat is null"));
    }

    [Fact]
    public void IsSupported_IsTrue_ForTheHangfirePostgreSqlVersionInUse()
    {
        // The commit reads the library's queued commands (private); a version without them would commit statement by
        // statement again, silently: this pins it.
        Assert.True(HangfireBatchedTransaction.IsSupported);
    }

    private async Task<long> ScalarAsync(string sql)
    {
        await using var cmd = Db.CreateCommand(sql);
        return Convert.ToInt64(await cmd.ExecuteScalarAsync());
    }

    /// <summary>A table's rows by id, each column as compared: times as seconds from now, JSON with its times blanked.</summary>
    private async Task<List<object?[]>> DumpAsync(string schema, string table)
    {
        await using var cmd = Db.CreateCommand($"select *, now() at time zone 'UTC' as dumped_at from \"{schema}\".\"{table}\" order by id");
        await using var reader = await cmd.ExecuteReaderAsync();
        var rows = new List<object?[]>();
        while (await reader.ReadAsync())
        {
            var now = reader.GetDateTime(reader.FieldCount - 1);
            var row = new object?[reader.FieldCount - 1];
            for (var i = 0; i < row.Length; i++)
            {
                var value = reader.IsDBNull(i) ? null : reader.GetValue(i);
                var name = reader.GetName(i);
                row[i] = (table, name, value) switch
                {
                    (_, _, DateTime t) => new Seconds((t - now).TotalSeconds),
                    // The schedule's score is its due time (Unix seconds).
                    ("set", "score", double s) when s > 1e9 => new Seconds(s - new DateTimeOffset(now, TimeSpan.Zero).ToUnixTimeSeconds()),
                    (_, _, string s) => Normalize(s),
                    _ => value,
                };
            }
            rows.Add(row);
        }
        return rows;
    }

    private sealed record Seconds(double Value);

    /// <summary>Times written into values (a state's data, a recurring job's hash, parameters) blanked.</summary>
    private static string Normalize(string value)
    {
        if (IsTime(value)) return "<time>";
        if (!value.StartsWith('{')) return value;
        try
        {
            if (JsonNode.Parse(value) is not JsonObject json) return value;
            foreach (var (key, node) in json.ToList())
                if (node is JsonValue v && v.TryGetValue<string>(out var s) && IsTime(s)) json[key] = "<time>";
            return json.ToJsonString();
        }
        catch (System.Text.Json.JsonException)
        {
            return value;
        }
    }

    private static bool IsTime(string s) =>
        (s.Length >= 19 && s[4] == '-' && s[10] == 'T' && DateTime.TryParse(s, CultureInfo.InvariantCulture, DateTimeStyles.RoundtripKind, out _))
        // Unix times (seconds or milliseconds) of this decade.
        || (long.TryParse(s, CultureInfo.InvariantCulture, out var n) && (n is > 1_600_000_000 and < 2_500_000_000 or > 1_600_000_000_000 and < 2_500_000_000_000));

    private static void AssertSame(object? expected, object? actual, string what)
    {
        if (expected is Seconds e && actual is Seconds a)
            Assert.True(Math.Abs(e.Value - a.Value) <= TimeToleranceSeconds, $"{what}: {e.Value:0.0} s against {a.Value:0.0} s");
        else
            Assert.True(Equals(expected, actual), $"{what}: expected {expected ?? "null"}, got {actual ?? "null"}");
    }
}

/// <summary>The job method of <see cref="HangfireBatchedTransactionFacts"/>' jobs (never performed: no server fetches their
/// queues).</summary>
public static class ScenarioJobs
{
    public static void Noop(string name) => _ = name;
}
