using System.Diagnostics;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;
using BatchRunner.Server.Hosting;
using BatchRunner.Testing;
using Hangfire;
using Hangfire.PostgreSql;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;

namespace BatchRunner.Bench;

/// <summary>
/// Does the embedded database stay bounded? A real BatchRunner (API + worker, embedded PostgreSQL) runs
/// one real job to the end; its rows (batchrunner.jobs, attempts, outputs; Hangfire's job, states and
/// parameters) are then cloned in bulk by SQL into N finished jobs, as if N such jobs had run. Hangfire's
/// own retention is then applied: the clones' expiry is moved to the past (as a day passing would, with
/// the default JobExpirationTimeout of one day) and Hangfire.PostgreSql's ExpirationManager, the real
/// component, deletes them; autovacuum makes the space reusable. Two rounds show whether the size keeps
/// growing with Hangfire's share or only with BatchRunner's job history, which has no retention.
/// </summary>
public static class RetentionBench
{
    private const string Key = "bench-key";

    public static async Task<int> RunAsync(int jobs)
    {
        var dir = Path.Combine("/var/tmp", "batchrunner-bench", "retention-" + Guid.NewGuid().ToString("N")[..8]);
        await using var registry = await TestRegistry.StartAsync();
        var image = await TestImages.PushBusyboxAsync(registry);
        var app = await BatchRunnerApp.BuildAsync([
            "--urls", "http://127.0.0.1:0", $"--BatchRunner:DataDir={dir}", $"--BatchRunner:ApiKey={Key}",
            "--Logging:LogLevel:Default=Warning",
        ]);
        await app.StartAsync();
        try
        {
            var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
            using var http = new HttpClient { BaseAddress = new Uri(address) };
            http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", Key);
            var db = app.Services.GetRequiredService<NpgsqlDataSource>();

            // The template: one real job through the real code paths, with a log line and two outputs.
            var submit = await http.PostAsJsonAsync("/api/v1/jobs", new
            {
                name = "retention-template",
                image,
                command = new[] { "/bin/sh", "-c", "echo hello; echo 42 > /outputs/a.txt; echo 43 > /outputs/b.txt" },
                resources = new { cpus = 0.25, memory = "32Mi" },
            });
            submit.EnsureSuccessStatusCode();
            var id = Guid.Parse(JsonDocument.Parse(await submit.Content.ReadAsStringAsync()).RootElement.GetProperty("id").GetString()!);
            await Poll.UntilAsync(async () => JsonDocument.Parse(await http.GetStringAsync($"/api/v1/jobs/{id}")).RootElement.GetProperty("state").GetString(),
                s => s == "succeeded", TimeSpan.FromSeconds(60), "the template job");
            // Hangfire moves the job to Succeeded after the job method returns.
            await Poll.UntilAsync(() => ScalarAsync<string>(db, $"select statename from hangfire.job where id = (select hangfire_job_id::bigint from batchrunner.jobs where id = '{id}')"),
                s => s == "Succeeded", TimeSpan.FromSeconds(30), "Hangfire's Succeeded state");

            var rows = new Sizes();
            Console.WriteLine($"Retention benchmark, {Environment.ProcessorCount} CPUs: {jobs:N0} finished jobs cloned from one real job, per round");
            Console.WriteLine();
            Console.WriteLine("| moment | database | batchrunner.* | hangfire.* | hangfire.job rows | batchrunner.jobs rows |");
            Console.WriteLine("|---|---:|---:|---:|---:|---:|");
            await rows.PrintAsync(db, "empty (one real job)");
            var storage = (PostgreSqlStorage)app.Services.GetRequiredService<JobStorage>();
            for (int round = 1; round <= 2; round++)
            {
                var sw = Stopwatch.StartNew();
                await CloneAsync(db, id, jobs);
                await AnalyzeAsync(db);
                await rows.PrintAsync(db, $"round {round}: +{jobs:N0} finished jobs ({sw.Elapsed.TotalSeconds:0} s to write)");

                // A day later for Hangfire (its JobExpirationTimeout), then its ExpirationManager's pass.
                await ExecAsync(db, $"update hangfire.job set expireat = now() - interval '1 second' where id <> (select hangfire_job_id::bigint from batchrunner.jobs where id = '{id}')");
                sw.Restart();
                await RunExpirationManagerAsync(storage, db);
                var expired = sw.Elapsed;
                var vacuum = await WaitForAutovacuumAsync(db, TimeSpan.FromMinutes(3));
                await AnalyzeAsync(db);
                await rows.PrintAsync(db, $"round {round}: after Hangfire's expiration ({expired.TotalSeconds:0} s) and {vacuum}");
            }
            Console.WriteLine();
            Console.WriteLine(rows.PerJob(jobs));
            return 0;
        }
        finally
        {
            await app.StopAsync();
            await app.DisposeAsync();
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        }
    }

    /// <summary>
    /// N copies of every row the template job left, with fresh ids, in one statement per table. Rows are
    /// copied through jsonb so that every column (present and future) is carried over unchanged.
    /// </summary>
    private static async Task CloneAsync(NpgsqlDataSource db, Guid template, int n)
    {
        const int batch = 20_000;
        for (int done = 0; done < n; done += batch)
        {
            var count = Math.Min(batch, n - done);
            await ExecAsync(db, $"""
                begin;
                create temp table map on commit drop as
                  select g, gen_random_uuid() as id, nextval('hangfire.job_id_seq') as hf
                    from generate_series(1, {count}) g;
                create temp table tj on commit drop as
                  select * from batchrunner.jobs where id = '{template}';
                insert into hangfire.job
                  select (jsonb_populate_record(null::hangfire.job, to_jsonb(j) || jsonb_build_object('id', m.hf, 'stateid', null))).*
                    from hangfire.job j, map m where j.id = (select hangfire_job_id::bigint from tj);
                insert into hangfire.state
                  select (jsonb_populate_record(null::hangfire.state, to_jsonb(s) || jsonb_build_object('id', nextval('hangfire.state_id_seq'), 'jobid', m.hf))).*
                    from hangfire.state s, map m where s.jobid = (select hangfire_job_id::bigint from tj);
                update hangfire.job j set stateid = s.id
                  from hangfire.state s where s.jobid = j.id and j.stateid is null and s.name = j.statename;
                insert into hangfire.jobparameter
                  select (jsonb_populate_record(null::hangfire.jobparameter, to_jsonb(p) || jsonb_build_object('id', nextval('hangfire.jobparameter_id_seq'), 'jobid', m.hf))).*
                    from hangfire.jobparameter p, map m where p.jobid = (select hangfire_job_id::bigint from tj);
                insert into batchrunner.jobs
                  select (jsonb_populate_record(null::batchrunner.jobs, to_jsonb(j) || jsonb_build_object('id', m.id, 'hangfire_job_id', m.hf::text))).*
                    from tj j, map m;
                insert into batchrunner.attempts
                  select (jsonb_populate_record(null::batchrunner.attempts, to_jsonb(a) || jsonb_build_object('job_id', m.id))).*
                    from batchrunner.attempts a, map m where a.job_id = '{template}';
                insert into batchrunner.outputs
                  select (jsonb_populate_record(null::batchrunner.outputs, to_jsonb(o) || jsonb_build_object('job_id', m.id))).*
                    from batchrunner.outputs o, map m where o.job_id = '{template}';
                commit;
                """);
        }
    }

    /// <summary>Hangfire.PostgreSql's expiration component, run as the Hangfire server runs it (every JobExpirationCheckInterval), until it has deleted what expired.</summary>
    private static async Task RunExpirationManagerAsync(PostgreSqlStorage storage, NpgsqlDataSource db)
    {
#pragma warning disable CS0618 // GetComponents is how a storage hands its components to the Hangfire server
        var manager = (Hangfire.Server.IServerComponent)storage.GetComponents().Single(c => c.GetType().Name == "ExpirationManager");
#pragma warning restore CS0618
        using var cts = new CancellationTokenSource();
        // One pass deletes in batches until nothing is left to expire, then waits for its next interval.
        var run = Task.Run(() => { try { manager.Execute(cts.Token); } catch (OperationCanceledException) { } });
        await Poll.UntilAsync(() => ScalarAsync<long>(db, "select count(*) from hangfire.job where expireat < now()"), n => n == 0, TimeSpan.FromMinutes(10),
            "Hangfire's expiration to delete the expired jobs", 200);
        await cts.CancelAsync();
        await run;
    }

    /// <summary>What autovacuum did to the big tables after the deletes (it runs every minute); a plain VACUUM if it did not come in time.</summary>
    private static async Task<string> WaitForAutovacuumAsync(NpgsqlDataSource db, TimeSpan timeout)
    {
        var since = await ScalarAsync<DateTime>(db, "select now()::timestamp");
        try
        {
            await Poll.UntilAsync(() => ScalarAsync<long>(db, $"""
                select count(*) from pg_stat_user_tables
                 where relname in ('job', 'state', 'jobparameter') and schemaname = 'hangfire'
                   and coalesce(last_autovacuum, '-infinity') < '{since:O}'
                """), n => n == 0, timeout, "autovacuum of hangfire.job, state and jobparameter", 1000);
            return "autovacuum";
        }
        catch (TimeoutException)
        {
            await ExecAsync(db, "vacuum hangfire.job, hangfire.state, hangfire.jobparameter");
            return $"a plain VACUUM (autovacuum had not run within {timeout.TotalMinutes:0} min)";
        }
    }

    private static Task AnalyzeAsync(NpgsqlDataSource db) => ExecAsync(db, "analyze");

    private sealed class Sizes
    {
        private readonly List<(long Br, long Hf, long BrRows)> _points = [];

        public async Task PrintAsync(NpgsqlDataSource db, string moment)
        {
            var total = await ScalarAsync<long>(db, "select pg_database_size(current_database())");
            var br = await SchemaBytesAsync(db, "batchrunner");
            var hf = await SchemaBytesAsync(db, "hangfire");
            var hfRows = await ScalarAsync<long>(db, "select count(*) from hangfire.job");
            var brRows = await ScalarAsync<long>(db, "select count(*) from batchrunner.jobs");
            _points.Add((br, hf, brRows));
            Console.WriteLine($"| {moment} | {Mb(total)} | {Mb(br)} | {Mb(hf)} | {hfRows:N0} | {brRows:N0} |");
        }

        public string PerJob(int jobs)
        {
            var (br0, hf0, _) = _points[0];
            var (br1, hf1, _) = _points[1];
            var (_, hfAfter1, _) = _points[2];
            var (br2, _, _) = _points[3];
            var (_, hfAfter2, _) = _points[4];
            return $"Per finished job: batchrunner.* {(br1 - br0) / (double)jobs:F0} B (kept: the jobs' history), " +
                   $"hangfire.* {(hf1 - hf0) / (double)jobs:F0} B until it expires. After expiration hangfire.* is {Mb(hfAfter1)} " +
                   $"and after a second round {Mb(hfAfter2)} (space reused); batchrunner.* grew {Mb(br2 - br1)} in round 2.";
        }

        private static async Task<long> SchemaBytesAsync(NpgsqlDataSource db, string schema) =>
            await ScalarAsync<long>(db, $"""
                select coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint from pg_class c join pg_namespace n on n.oid = c.relnamespace
                 where n.nspname = '{schema}' and c.relkind in ('r', 'm')
                """);

        private static string Mb(long bytes) => $"{bytes / 1048576.0:F1} MB";
    }

    private static async Task ExecAsync(NpgsqlDataSource db, string sql)
    {
        await using var cmd = db.CreateCommand(sql);
        cmd.CommandTimeout = 600;
        await cmd.ExecuteNonQueryAsync();
    }

    private static async Task<T> ScalarAsync<T>(NpgsqlDataSource db, string sql)
    {
        await using var cmd = db.CreateCommand(sql);
        return (T)(await cmd.ExecuteScalarAsync())!;
    }
}
