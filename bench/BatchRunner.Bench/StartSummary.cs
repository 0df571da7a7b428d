using System.Diagnostics;
using System.Net.Http.Json;
using System.Text.Json;
using BatchRunner.Runtime;
using BatchRunner.Runtime.Spec;
using BatchRunner.Testing;
using Npgsql;

namespace BatchRunner.Bench;

/// <summary>What the start part of `summary` runs: rounds of the latency figure, jobs of the throughput and CPU figures.</summary>
/// <param name="Rounds">Submit → succeeded rounds, each alternating with a bare run.</param>
/// <param name="Jobs">Jobs of the throughput run (and of the CPU-per-job figure).</param>
/// <param name="RuntimePath">runc or crun: the server runs its jobs with it (BatchRunner:Runtime) and the baseline is a bare `RUNTIME run`.</param>
/// <param name="Statements">Load pg_stat_statements in the server's embedded PostgreSQL and report statements per job (a restart more).</param>
/// <param name="KeepServerLog">Keep the server's log (DATA.log under the bench root), with BatchRunner's debug lines and
/// timestamps, for per-phase timings (more log lines per job: not for the CPU figure).</param>
/// <param name="WarmupJobs">Jobs run before any figure, unmeasured: until the server's hot paths are compiled at tier 1.</param>
public sealed record StartSummaryOptions(int Rounds = 20, int Jobs = 500, string RuntimePath = "/usr/sbin/runc", bool Statements = false, bool KeepServerLog = false, int WarmupJobs = 200,
    double Cpus = 0.1);

/// <summary>
/// Issue 14's start and throughput figures, measured from outside on a real BatchRunner process (the built
/// `batchrunner`, role all, one node, its embedded PostgreSQL in a temp data directory) through the HTTP API, side by
/// side with a bare `RUNTIME run` of an equivalent config.json (SpecBuilder's, the same limits, seccomp and masks) on
/// a busybox rootfs:
/// <list type="bullet">
/// <item>submit → succeeded of a warm `/bin/true` job: POST, then the long poll `GET ?waitSeconds=` until succeeded (client clock),
///   rounds alternating with one bare run each; and submit → running from the job's own createdAt → startedAt;</item>
/// <item>jobs/s: <see cref="StartSummaryOptions.Jobs"/> jobs submitted by 4 clients at once, from the first POST to the
///   last job succeeded, against the same number of bare runs two at a time;</item>
/// <item>CPU per job over that run: the server process's utime + stime from /proc/PID/stat, beside PostgreSQL's (the
///   postmaster and all its processes) and the server's reaped children (runc, the containers).</item>
/// </list>
/// The jobs ask for 0.1 CPU and 32 MiB, so that admission lets the node run many trivial jobs at once; their disk
/// is the node's default (a loop-device volume, as any job gets).
/// </summary>
public static class StartSummary
{
    private const string Root = "/var/tmp/batchrunner-bench/start-summary";
    private const string Key = "start-summary-key";
    private const string Area = "start";

    public static async Task AddRowsAsync(SummaryTable table, StartSummaryOptions o)
    {
        var steps = new (string What, Func<Context, Task> Run)[]
        {
            ("warm-up", c => WarmUpAsync(c, o)),
            ("submit → succeeded, warm /bin/true", c => LatencyAsync(table, c, o)),
            ("trivial jobs/s, end to end", c => ThroughputAsync(table, c, o)),
        };
        // --start-jobs 0: the latency rounds only.
        if (o.Jobs <= 0) steps = steps[..2];
        Context? context = null;
        try
        {
            context = await Context.StartAsync(o);
            foreach (var (what, run) in steps)
            {
                try { await run(context); }
                catch (Exception e) { table.Failed(Area, what, e); }
            }
        }
        catch (Exception e)
        {
            table.Failed(Area, "start part (set-up)", e);
        }
        finally
        {
            if (context is not null) await context.DisposeAsync();
        }
    }

    private sealed class Context : IAsyncDisposable
    {
        public required TestRegistry Registry { get; init; }
        public required string Image { get; init; }
        public required BenchServerProcess Server { get; init; }
        public required string Rootfs { get; init; }
        public required string RuntimeName { get; init; }
        public required string RuntimePath { get; init; }
        public required bool KeepLog { get; init; }
        /// <summary>Every job's and bare run's CPU limit (<c>--start-cpus</c>): 0.1 by default. A container's cgroup is charged
        /// for runc's own init too, so under a small limit its start and exit wait out CFS throttling (bench/README,
        /// seventeenth round).</summary>
        public required double Cpus { get; init; }
        public NpgsqlDataSource? Statements { get; init; }

        public static async Task<Context> StartAsync(StartSummaryOptions o)
        {
            if (Directory.Exists(Root))
            {
                Directory.Delete(Root, recursive: true);
                // The last run's files (thousands of inodes) were freed just now. On an ext4 without a journal (this VM's
                // root) each inode made afterwards scans past every inode of its group freed in the last 60 s, or 360 s
                // while the inode table block is dirty (ext4's recently_deleted; RECENTCY_MIN is 60 s since Linux 5.6, 5 s
                // before): back to back, the server's CPU per job went 10.1 → 12.2 → 16.3 ms, the next run paying for the
                // last one's clean-up (in a perf profile 15 % of the server's samples were that scan). Written back, and
                // 62 s later, those inodes are not scanned. (A 6 s wait, from the older kernels' 5 s, left the series
                // at 11.3 → 13.4 → 14.0 ms.)
                await ExternalCommand.RunAsync("sync", []);
                await Task.Delay(TimeSpan.FromSeconds(62));
            }
            Directory.CreateDirectory(Root);
            var (name, version) = await RuntimeDetector.VersionAsync(o.RuntimePath, CancellationToken.None);
            Console.WriteLine($"start: {name} {version} ({o.RuntimePath}), {o.Rounds} latency rounds, {o.Jobs} throughput jobs");
            var registry = await TestRegistry.StartAsync();
            var image = await TestImages.PushBusyboxAsync(registry);
            var rootfs = BusyboxRootfs.Create(Path.Combine(Root, "rootfs"));
            var dataDir = Path.Combine(Root, "server");
            // The shipped log levels for the figures; with --keep-server-log, BatchRunner's debug lines with timestamps (phases).
            string[] args = o.KeepServerLog
                ? [$"--BatchRunner:Runtime={o.RuntimePath}", "--Logging:LogLevel:BatchRunner=Debug", "--Logging:Console:TimestampFormat=HH:mm:ss.fff "]
                : [$"--BatchRunner:Runtime={o.RuntimePath}"];
            var server = await BenchServerProcess.StartAsync(Root, "start-bench", Key, args, dataDir);
            NpgsqlDataSource? statements = null;
            if (o.Statements)
            {
                // pg_stat_statements must be preloaded: one restart of the server (and its postmaster) with it configured.
                await server.StopAsync(removeData: false);
                await File.AppendAllTextAsync(Path.Combine(dataDir, "postgres", "postgresql.conf"),
                    "\nshared_preload_libraries = 'pg_stat_statements'\npg_stat_statements.track = all\npg_stat_statements.track_planning = on\n");
                server = await BenchServerProcess.StartAsync(Root, "start-bench", Key, args, dataDir);
                statements = NpgsqlDataSource.Create($"Host={Path.Combine(dataDir, "postgres-run")};Port=5432;Username=postgres;Database=batchrunner;Pooling=false");
                await using var cmd = statements.CreateCommand("create extension if not exists pg_stat_statements");
                await cmd.ExecuteNonQueryAsync();
            }
            var c = new Context
            {
                Registry = registry, Image = image, Server = server, Rootfs = rootfs, RuntimeName = name, RuntimePath = o.RuntimePath,
                KeepLog = o.KeepServerLog, Statements = statements, Cpus = o.Cpus,
            };
            // Warm-up: the image pull, the first container, JIT on both sides.
            await c.RunJobAsync();
            await c.BareAsync("warm");
            return c;
        }

        /// <summary>Submits one `/bin/true` job and waits for its end with the API's long poll (`?waitSeconds=`, as the CLI
        /// does): one GET that the server answers as soon as the job has ended; returns (submit → succeeded ms by the client,
        /// the job). It was a GET every 5 ms, which cost the server and this client CPU during the very launch measured.</summary>
        public async Task<(double Ms, JsonElement Job)> RunJobAsync()
        {
            var sw = Stopwatch.StartNew();
            var id = await SubmitAsync();
            while (true)
            {
                var job = JsonDocument.Parse(await Server.Http.GetStringAsync($"/api/v1/jobs/{id}?waitSeconds=30")).RootElement.Clone();
                var state = job.GetProperty("state").GetString();
                if (state == "succeeded") return (sw.Elapsed.TotalMilliseconds, job);
                if (state is "failed" or "cancelled") throw new InvalidOperationException($"job {id} {state}: {job}");
                if (sw.Elapsed > TimeSpan.FromSeconds(60)) throw new TimeoutException($"job {id} still {state} after 60 s");
            }
        }

        public async Task<string> SubmitAsync()
        {
            var r = await Server.Http.PostAsJsonAsync("/api/v1/jobs",
                new { image = Image, command = new[] { "/bin/true" }, resources = new { cpus = Cpus, memory = "32Mi" } });
            var body = await r.Content.ReadAsStringAsync();
            if (!r.IsSuccessStatusCode) throw new InvalidOperationException($"submit: {(int)r.StatusCode} {body}");
            return JsonDocument.Parse(body).RootElement.GetProperty("id").GetString()!;
        }

        /// <summary>The job once it has ended, or after 30 s (the API's long poll).</summary>
        public async Task<JsonElement> WaitAsync(string id) =>
            JsonDocument.Parse(await Server.Http.GetStringAsync($"/api/v1/jobs/{id}?waitSeconds=30")).RootElement.Clone();

        /// <summary>A bare `RUNTIME run` of SpecBuilder's config.json for /bin/true (written before the clock starts): ms.</summary>
        public async Task<double> BareAsync(string suffix)
        {
            var id = $"br-bench-bare-{suffix}";
            var bundle = Path.Combine(Root, "bare", id);
            Directory.CreateDirectory(bundle);
            var spec = new ContainerSpec
            {
                Id = id, RootfsPath = Rootfs, Args = ["/bin/true"], ReadonlyRootfs = true, Cpus = Cpus, MemoryLimitBytes = 32 << 20, PidsLimit = 64,
            };
            await File.WriteAllTextAsync(Path.Combine(bundle, "config.json"), SpecBuilder.ForContainer(spec).ToJson());
            var psi = new ProcessStartInfo(RuntimePath) { UseShellExecute = false, RedirectStandardInput = true };
            foreach (var a in new[] { "--root", Path.Combine(Root, "bare-state"), "run", "--bundle", bundle, id }) psi.ArgumentList.Add(a);
            var sw = Stopwatch.StartNew();
            using (var p = Process.Start(psi)!)
            {
                p.StandardInput.Close();
                await p.WaitForExitAsync();
                var ms = sw.Elapsed.TotalMilliseconds;
                if (p.ExitCode != 0) throw new InvalidOperationException($"bare {id} exited {p.ExitCode}");
                Directory.Delete(bundle, recursive: true);
                return ms;
            }
        }

        public async Task ResetStatementsAsync()
        {
            if (Statements is null) return;
            await using var cmd = Statements.CreateCommand("select pg_stat_statements_reset()");
            await cmd.ExecuteNonQueryAsync();
        }

        /// <summary>Calls, plannings and planning and execution time (ms) per statement since the reset, most called first.</summary>
        public async Task<List<(long Calls, long Plans, double PlanMs, double ExecMs, string Query)>> StatementsAsync()
        {
            var list = new List<(long, long, double, double, string)>();
            if (Statements is null) return list;
            await using var cmd = Statements.CreateCommand(
                "select calls, plans, total_plan_time, total_exec_time, regexp_replace(query, '\\s+', ' ', 'g') from pg_stat_statements " +
                "where dbid = (select oid from pg_database where datname = 'batchrunner') order by calls desc");
            await using var r = await cmd.ExecuteReaderAsync();
            while (await r.ReadAsync()) list.Add((r.GetInt64(0), r.GetInt64(1), r.GetDouble(2), r.GetDouble(3), r.GetString(4)));
            return list;
        }

        public async ValueTask DisposeAsync()
        {
            Statements?.Dispose();
            await Server.StopAsync(removeData: !KeepLog);
            if (KeepLog) Console.WriteLine($"start: server log kept at {Server.LogPath}");
            await Registry.DisposeAsync();
            try { Directory.Delete(Path.Combine(Root, "bare"), recursive: true); } catch (DirectoryNotFoundException) { }
            try { Directory.Delete(Path.Combine(Root, "rootfs"), recursive: true); } catch (DirectoryNotFoundException) { }
        }
    }

    /// <summary>Unmeasured rounds of the latency step's own kind (one job waited for, then one bare run) after the warm-up batch:
    /// more than the JIT's 30 calls before tier 1, since only these rounds use the long poll.</summary>
    private const int LatencyWarmupRounds = 40;

    /// <summary>
    /// Before any figure: <see cref="StartSummaryOptions.WarmupJobs"/> jobs from 4 clients, then a few rounds of the latency step's
    /// own calls, so that the server's hot paths and the client's are compiled at tier 1, as on a node that has been up a while.
    /// Without it the latency rounds ran with both JITs busy: during the server's `runc run --detach` (31 ms) the server's
    /// tiered-compilation thread used 5.9 ms of CPU and the bench's 7.4 ms, on this 2-core host (perf sched, 2026-11-30),
    /// while runc's own CPU was that of the bare run (22.7 against 22.8 ms).
    /// </summary>
    private static async Task WarmUpAsync(Context c, StartSummaryOptions o)
    {
        await RunBatchAsync(c, o.WarmupJobs);
        for (var i = 0; i < LatencyWarmupRounds; i++)
        {
            await c.RunJobAsync();
            await c.BareAsync("warm-" + i);
        }
    }

    private static async Task LatencyAsync(SummaryTable table, Context c, StartSummaryOptions o)
    {
        var ours = new List<double>();
        var running = new List<double>();
        var startedToFinished = new List<double>();
        var bare = new List<double>();
        var ids = new List<(string Id, DateTimeOffset Created, DateTimeOffset Seen)>();
        for (var i = 0; i < o.Rounds; i++)
        {
            async Task Ours()
            {
                var (ms, job) = await c.RunJobAsync();
                var seen = DateTimeOffset.Now;
                ours.Add(ms);
                var created = job.GetProperty("createdAt").GetDateTimeOffset();
                ids.Add((job.GetProperty("id").GetString()!, created, seen));
                var started = job.GetProperty("startedAt").GetDateTimeOffset();
                var finished = job.GetProperty("finishedAt").GetDateTimeOffset();
                running.Add((started - created).TotalMilliseconds);
                startedToFinished.Add((finished - started).TotalMilliseconds);
            }
            if (i % 2 == 0) { await Ours(); bare.Add(await c.BareAsync(i.ToString())); }
            else { bare.Add(await c.BareAsync(i.ToString())); await Ours(); }
        }
        var (m, b) = (Median(ours), Median(bare));
        table.Add(new SummaryRow(Area, "submit → succeeded, warm /bin/true (median)",
            $"{SummaryTable.Ms(m)} ms (p90 {SummaryTable.Ms(Quantile(ours, .9))})", $"bare `{c.RuntimeName} run`: {SummaryTable.Ms(b)} ms", m / b,
            "≤ bare + 30 ms", m <= b + 30));
        table.Add(new SummaryRow(Area, "submit → running (createdAt → startedAt, median)",
            $"{SummaryTable.Ms(Median(running))} ms; startedAt → finishedAt {SummaryTable.Ms(Median(startedToFinished))} ms", "—", null, "report", null));
        if (o.KeepServerLog) PrintPhases(c.Server.LogPath, ids);
    }

    // The server's own lines for one attempt, in order: the step after each is timed from the one before. A job's disk is
    // made for it ("Disk volume ... made in") or, when the node's pool has one, taken formatted ahead ("... taken for").
    private static readonly (string Step, string[] Texts)[] PhaseLines =
    [
        ("attempt begun", ["attempt 1 started"]), ("disk volume ready", ["Disk volume", "taken for"]), ("overlay mounted", ["root filesystem mounted"]),
        ("runtime called", ["Starting container"]), ("container running", ["running after"]), ("container exited", ["exited with code"]),
        ("outputs moved", ["moved 0 output"]), ("end recorded", ["ended succeeded"]), ("then container deleted", [" deleted"]),
    ];

    /// <summary>Per-phase medians of the latency rounds' jobs, from the server's debug lines (timestamps to the millisecond,
    /// the machine's local time), between the job's createdAt and the moment this client had its end.</summary>
    private static void PrintPhases(string logPath, List<(string Id, DateTimeOffset Created, DateTimeOffset Seen)> jobs)
    {
        static double SecondsOfDay(DateTimeOffset t) => t.ToLocalTime().TimeOfDay.TotalSeconds;
        var wanted = jobs.ToDictionary(j => j.Id.Replace("-", ""), j => new Dictionary<string, double>
        {
            ["queued (createdAt)"] = SecondsOfDay(j.Created), ["client had its end"] = SecondsOfDay(j.Seen),
        });
        double? at = null;
        foreach (var line in File.ReadLines(logPath))
        {
            var stamp = System.Text.RegularExpressions.Regex.Match(line, @"^(\d\d):(\d\d):(\d\d\.\d+) ");
            if (stamp.Success)
            {
                at = int.Parse(stamp.Groups[1].Value) * 3600 + int.Parse(stamp.Groups[2].Value) * 60
                     + double.Parse(stamp.Groups[3].Value, System.Globalization.CultureInfo.InvariantCulture);
                continue;
            }
            var id = System.Text.RegularExpressions.Regex.Match(line, @"Job ([0-9a-f-]{36})|br-[0-9a-f]+-([0-9a-f]{32})-");
            if (!id.Success || at is null) continue;
            var key = (id.Groups[1].Success ? id.Groups[1].Value : id.Groups[2].Value).Replace("-", "");
            if (!wanted.TryGetValue(key, out var seen)) continue;
            foreach (var (step, texts) in PhaseLines)
                if (texts.Any(t => line.Contains(t, StringComparison.Ordinal))) seen.TryAdd(step, at.Value);
        }
        var complete = wanted.Values.Where(v => v.Count == PhaseLines.Length + 2).ToList();
        Console.WriteLine($"start: phases of {complete.Count} latency-round jobs (server log, medians):");
        string[] steps = ["queued (createdAt)", .. PhaseLines.Select(p => p.Step).Where(s => s != "then container deleted"), "client had its end"];
        for (var i = 1; i < steps.Length; i++)
            if (complete.Count > 0)
                Console.WriteLine($"  {steps[i],-22} {Median(complete.Select(v => (v[steps[i]] - v[steps[i - 1]]) * 1000).ToList()),7:0.0} ms");
        if (complete.Count > 0)
            Console.WriteLine($"  (container deleted {Median(complete.Select(v => (v["then container deleted"] - v["end recorded"]) * 1000).ToList()):0.0} ms after the end was recorded)");
    }

    private static (double SelfMs, double ReapedChildrenMs) ServerCpu(Context c) =>
        ProcStat.SelfAndReapedMs(c.Server.Pid) ?? throw new InvalidOperationException($"the server (pid {c.Server.Pid}) is gone");

    private static async Task ThroughputAsync(SummaryTable table, Context c, StartSummaryOptions o)
    {
        // After the warm-up (WarmUpAsync): a server that has run a few dozen jobs has its hot paths compiled at tier 1, as a
        // long-running node has; without it the JIT's own thread is a fifth of the CPU of the first few hundred jobs.
        await c.ResetStatementsAsync();
        var server0 = ServerCpu(c);
        var threads0 = ProcStat.ThreadsCpu(c.Server.Pid);
        var pgData = Path.Combine(c.Server.DataDir, "postgres");
        var pg0 = ProcStat.ClusterCpuMs(pgData);
        var (machine0, machineAll0) = ProcStat.MachineMs();
        var bench0 = Environment.CpuUsage.TotalTime.TotalMilliseconds;
        // BENCH_PERF=FILE: `perf record -g` of the server during the throughput run (for profiling, not the figures; run the
        // bench with DOTNET_PerfMapEnabled=1 so that perf can name the JIT-compiled methods). BENCH_PERF_ALL=1: of the whole
        // machine (every process and kernel thread) instead. BENCH_PERF_ARGS="...": perf record's arguments instead of
        // "-F 499 -g", split at spaces (e.g. "-e raw_syscalls:sys_enter" to count the server's system calls per job with
        // `perf script`, or "-g -e raw_syscalls:sys_enter --filter id==24" for the stacks of one call).
        Process? trace = null;
        if (Environment.GetEnvironmentVariable("BENCH_PERF") is { Length: > 0 } traceFile)
        {
            string[] target = Environment.GetEnvironmentVariable("BENCH_PERF_ALL") == "1" ? ["-a"] : ["-p", c.Server.Pid.ToString()];
            string[] what = Environment.GetEnvironmentVariable("BENCH_PERF_ARGS") is { Length: > 0 } args
                ? args.Split(' ', StringSplitOptions.RemoveEmptyEntries) : ["-F", "499", "-g"];
            trace = Process.Start(new ProcessStartInfo("perf", ["record", .. what, .. target, "-o", traceFile, "--", "sleep", "12"])
                { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true })!;
            await Task.Delay(500);
        }
        var sw = Stopwatch.StartNew();
        await RunBatchAsync(c, o.Jobs);
        var wall = sw.Elapsed.TotalSeconds;
        var server1 = ServerCpu(c);
        var threads1 = ProcStat.ThreadsCpu(c.Server.Pid);
        var byThread = ProcStat.CpuByThreadSince(threads0, threads1);
        var pg1 = ProcStat.ClusterCpuMs(pgData);
        var (machine1, machineAll1) = ProcStat.MachineMs();
        var bench1 = Environment.CpuUsage.TotalTime.TotalMilliseconds;
        var statements = await c.StatementsAsync();
        if (trace is not null) { await trace.WaitForExitAsync(); trace.Dispose(); }

        // The baseline: the same number of bare runs, two at a time.
        var bareSw = Stopwatch.StartNew();
        var bareNext = -1;
        await Task.WhenAll(Enumerable.Range(0, 2).Select(async _ =>
        {
            int i;
            while ((i = Interlocked.Increment(ref bareNext)) < o.Jobs) await c.BareAsync("tp-" + i);
        }));
        var bareWall = bareSw.Elapsed.TotalSeconds;

        var (ours, bare) = (o.Jobs / wall, o.Jobs / bareWall);
        table.Add(new SummaryRow(Area, $"trivial jobs/s, end to end ({o.Jobs} jobs, {c.RuntimeName})",
            $"{SummaryTable.Ms(ours)} jobs/s", $"bare `{c.RuntimeName} run` two at a time: {SummaryTable.Ms(bare)}/s", ours / bare,
            "≥ 40/s (0.75×)", ours >= 40));
        var serverMs = (server1.SelfMs - server0.SelfMs) / o.Jobs;
        var childrenMs = (server1.ReapedChildrenMs - server0.ReapedChildrenMs) / o.Jobs;
        var pgMs = (pg1 - pg0) / o.Jobs;
        // The JIT's background thread (tiered compilation: methods going to their optimised code) was 0.05 to 2.6 ms per job in
        // runs of 400 jobs after 200 of warm-up (2026-12-01): one-off work of a process still warming up, and most of the
        // spread between runs. Shown, not subtracted.
        const string jitThread = ".NET Tiered Com"; // the thread's name as /proc shows it (15 characters)
        var (jitUser, jitSys) = byThread.GetValueOrDefault(jitThread);
        var jitMs = (jitUser + jitSys) / o.Jobs;
        table.Add(new SummaryRow(Area, $"CPU per job in BatchRunner's process ({o.Jobs} jobs, /proc/PID/stat)",
            $"{SummaryTable.Ms(serverMs)} ms (JIT {SummaryTable.Ms(jitMs)} of it)", $"PostgreSQL {SummaryTable.Ms(pgMs)} ms; runc + containers (reaped children) {SummaryTable.Ms(childrenMs)} ms",
            null, "≤ 10 ms", serverMs <= 10));
        // The whole machine over the run: what the three above leave out is this bench's own client (its HTTP calls) and the
        // kernel's threads (the loop devices' I/O, writeback, RCU); when the machine is busy all the time, jobs/s is CPU-bound.
        var machineMs = (machine1 - machine0) / o.Jobs;
        var benchMs = (bench1 - bench0) / o.Jobs;
        Console.WriteLine($"start: the machine's CPU per job: {machineMs:0.0} ms, busy {(machine1 - machine0) / (machineAll1 - machineAll0) * 100:0} % of " +
            $"{Environment.ProcessorCount} CPUs: server {serverMs:0.0}, PostgreSQL {pgMs:0.0}, runc + containers {childrenMs:0.0}, " +
            $"this bench {benchMs:0.0}, the rest (kernel threads, other processes) {machineMs - serverMs - pgMs - childrenMs - benchMs:0.0}");
        // Where the server's CPU went: user against kernel, by thread name (threads alive at the end; a thread that ended during
        // the run counts only in "(process)").
        Console.WriteLine($"start: the server's CPU per job by thread, user + kernel ms ({o.Jobs} jobs):");
        foreach (var (name, (ut, st)) in byThread.OrderByDescending(t => t.Value.UserMs + t.Value.SysMs))
        {
            var (u, s) = (ut / o.Jobs, st / o.Jobs);
            if (u + s >= 0.05) Console.WriteLine($"  {name,-24} {u,6:0.00} + {s,6:0.00}");
        }
        if (c.Statements is not null)
        {
            var calls = statements.Sum(s => s.Calls);
            table.Add(new SummaryRow(Area, "database statements per job (pg_stat_statements)",
                SummaryTable.Ms(calls / (double)o.Jobs), "—", null, "report", null));
            Console.WriteLine($"start: statements per job, most called first: calls, plannings, planning and execution ms per job ({calls} calls; " +
                $"{statements.Sum(s => s.PlanMs) / o.Jobs:0.00} ms planning and {statements.Sum(s => s.ExecMs) / o.Jobs:0.00} ms execution per job):");
            foreach (var (n, plans, planMs, execMs, q) in statements.Take(40))
                Console.WriteLine($"  {n / (double)o.Jobs,6:0.00} {plans / (double)o.Jobs,6:0.00} {planMs / o.Jobs,6:0.000} {execMs / o.Jobs,6:0.000}  {(q.Length > 140 ? q[..140] : q)}");
        }
    }

    /// <summary>Submits <paramref name="jobs"/> jobs from 4 clients at once, then waits until each has succeeded.</summary>
    private static async Task RunBatchAsync(Context c, int jobs)
    {
        var sw = Stopwatch.StartNew();
        var ids = new string[jobs];
        var next = -1;
        await Task.WhenAll(Enumerable.Range(0, 4).Select(async _ =>
        {
            int i;
            while ((i = Interlocked.Increment(ref next)) < jobs) ids[i] = await c.SubmitAsync();
        }));
        // Waits for each job in submission order with the long poll, as a client of the API does now: one GET per job,
        // answered at once when it has ended (most have, by the time it is asked about), else at its end. It was a GET every
        // 20 ms, whose CPU the server's figure carried too.
        foreach (var id in ids)
        {
            while (true)
            {
                var state = (await c.WaitAsync(id)).GetProperty("state").GetString();
                if (state == "succeeded") break;
                if (state is "failed" or "cancelled") throw new InvalidOperationException($"job {id} {state}");
                if (sw.Elapsed > TimeSpan.FromMinutes(10)) throw new TimeoutException($"job {id} still {state} after 10 min");
            }
        }
    }

    private static double Median(List<double> xs) => Quantile(xs, .5);

    private static double Quantile(List<double> xs, double q)
    {
        var s = xs.Order().ToList();
        return s[(int)Math.Round(q * (s.Count - 1))];
    }
}
