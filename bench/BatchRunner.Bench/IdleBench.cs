using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;
using BatchRunner.Testing;
using Npgsql;

namespace BatchRunner.Bench;

/// <summary>
/// What a node costs when nothing happens, and with 10 long jobs running: the real <c>batchrunner</c> process (role all,
/// its embedded PostgreSQL, runc) side by side with a bare Hangfire server on Hangfire's defaults (<see cref="HangfireBare"/>)
/// on another database of the same cluster, both running at once and measured over the same windows.
/// </summary>
/// <remarks>
/// Per contender: CPU of its process and its helpers (utime + stime from /proc of the process and its descendants but
/// PostgreSQL, with what they reaped: a watchdog shell's sleeps; ms per second of wall time), its RSS (VmRSS), and the CPU of
/// the PostgreSQL backends serving its database (pg_stat_activity's pid per datname; a backend that ends within a window
/// loses its share, both pools keep theirs open). The cluster's own background processes (checkpointer, WAL writer,
/// autovacuum) serve both and are reported apart. "10 running": 10 jobs of <c>sleep</c> in each, the BatchRunner ones
/// containers of busybox, the Hangfire ones child processes; the sleeps' own CPU is not counted (it is none).
/// </remarks>
public static class IdleBench
{
    private const string Root = "/var/tmp/batchrunner-bench/idle";
    private const string Key = "idle-bench-key";
    private const string BareDatabase = "hangfire_bare";
    private const int SettleSeconds = 45;

    /// <summary>One contender over one window: CPU ms per second (process, its PostgreSQL backends), RSS, backends.</summary>
    public sealed record Sample(double ProcessCpuMsPerSecond, double PostgresCpuMsPerSecond, long RssBytes, int Backends, double TransactionsPerSecond,
        double HelpersCpuMsPerSecond = 0)
    {
        public double TotalCpuMsPerSecond => ProcessCpuMsPerSecond + PostgresCpuMsPerSecond;
    }

    /// <summary>Medians over the windows: idle and with 10 running, each contender; the cluster's background processes.</summary>
    public sealed record Result(Sample BatchRunnerIdle, Sample HangfireIdle, Sample BatchRunnerBusy, Sample HangfireBusy,
        double BackgroundCpuMsPerSecond, int WindowSeconds, int Windows);

    public static async Task<int> RunAsync(int windowSeconds, int windows, string[] extraServerArgs)
    {
        var r = await MeasureAsync(windowSeconds, windows, extraServerArgs);
        Console.WriteLine($"Idle cost, {Environment.ProcessorCount} CPUs, medians of {r.Windows} windows of {r.WindowSeconds} s; CPU in ms per second (1000 = one core)");
        Console.WriteLine("| node | process CPU (of it: helper processes) | its PostgreSQL backends' CPU | total CPU | RSS | backends | transactions/s |");
        Console.WriteLine("|---|---:|---:|---:|---:|---:|---:|");
        void Row(string name, Sample s) => Console.WriteLine(
            $"| {name} | {s.ProcessCpuMsPerSecond:F1} ({s.HelpersCpuMsPerSecond:F1}) | {s.PostgresCpuMsPerSecond:F1} | {s.TotalCpuMsPerSecond:F1} | {s.RssBytes / 1048576.0:F0} MiB | {s.Backends} | {s.TransactionsPerSecond:F1} |");
        Row("BatchRunner idle", r.BatchRunnerIdle);
        Row("Hangfire defaults idle", r.HangfireIdle);
        Row("BatchRunner, 10 running", r.BatchRunnerBusy);
        Row("Hangfire defaults, 10 running", r.HangfireBusy);
        Console.WriteLine($"cluster background processes (shared): {r.BackgroundCpuMsPerSecond:F1} ms/s");
        return 0;
    }

    public static async Task<Result> MeasureAsync(int windowSeconds, int windows, string[]? extraServerArgs = null)
    {
        if (Directory.Exists(Root)) Directory.Delete(Root, recursive: true);
        Directory.CreateDirectory(Root);
        await using var registry = await TestRegistry.StartAsync();
        var image = await TestImages.PushBusyboxAsync(registry);
        var dataDir = Path.Combine(Root, "node");
        var port = BenchServerProcess.FreePort();
        // BENCH_BATCHRUNNER: another build of the server to measure (an earlier commit's, for before/after figures).
        var psi = new ProcessStartInfo(Environment.GetEnvironmentVariable("BENCH_BATCHRUNNER") is { Length: > 0 } other ? other : Path.Combine(AppContext.BaseDirectory, "batchrunner"))
        {
            UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true,
        };
        foreach (var a in (string[])["--urls", $"http://127.0.0.1:{port}", $"--BatchRunner:DataDir={dataDir}", $"--BatchRunner:ApiKey={Key}",
                     "--BatchRunner:Workers=12", "--BatchRunner:NodeName=idle-bench", "--Logging:LogLevel:BatchRunner.Requests=Warning",
                     .. TestRegistry.ServerArgs, .. extraServerArgs ?? []])
            psi.ArgumentList.Add(a);
        using var node = Process.Start(psi)!;
        node.StandardInput.Close();
        var pumps = Task.WhenAll(node.StandardOutput.BaseStream.CopyToAsync(Stream.Null), node.StandardError.BaseStream.CopyToAsync(Stream.Null));
        Process? bare = null;
        using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}"), Timeout = TimeSpan.FromSeconds(30) };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", Key);
        try
        {
            await NodeProcess.WaitHealthyAsync(node, http, "idle");

            // The bare Hangfire server on its own database of the same cluster.
            var pgData = Path.Combine(dataDir, "postgres");
            var admin = new NpgsqlConnectionStringBuilder { Host = Path.Combine(dataDir, "postgres-run"), Port = 5432, Username = "postgres", Database = "postgres", Pooling = false };
            await using (var conn = new NpgsqlConnection(admin.ConnectionString))
            {
                await conn.OpenAsync();
                await using var create = new NpgsqlCommand($"create database {BareDatabase}", conn);
                await create.ExecuteNonQueryAsync();
            }
            var bareCs = new NpgsqlConnectionStringBuilder(admin.ConnectionString) { Database = BareDatabase, Pooling = true }.ConnectionString;
            var barePsi = new ProcessStartInfo(Environment.ProcessPath!) { UseShellExecute = false, RedirectStandardInput = true, RedirectStandardOutput = true };
            if (Path.GetFileNameWithoutExtension(Environment.ProcessPath!) == "dotnet") barePsi.ArgumentList.Add(typeof(IdleBench).Assembly.Location);
            barePsi.ArgumentList.Add("hangfire-bare");
            barePsi.ArgumentList.Add(bareCs);
            bare = Process.Start(barePsi)!;
            if (await bare.StandardOutput.ReadLineAsync() != "ready") throw new InvalidOperationException("the bare Hangfire server did not start");
            var barePumps = bare.StandardOutput.BaseStream.CopyToAsync(Stream.Null);

            // Let both settle: start-up's JIT (tier-1 recompilation goes on for tens of seconds), first polls, Hangfire's
            // first heartbeat and aggregation; measured earlier, an idle node looked several times as busy as it is.
            await Task.Delay(TimeSpan.FromSeconds(SettleSeconds));
            var statements = Environment.GetEnvironmentVariable("BENCH_STATEMENTS") == "1" ? new StatementLog(pgData, admin.ConnectionString) : null;
            if (statements is not null) await statements.StartAsync();
            var idle = await WindowsAsync(node.Id, bare.Id, pgData, admin.ConnectionString, windowSeconds, windows);
            statements?.Report("idle", windowSeconds * windows);

            // 10 long jobs in each.
            var ids = new List<string>();
            for (var i = 0; i < 10; i++)
            {
                var submit = await http.PostAsJsonAsync("/api/v1/jobs", new { image, command = new[] { "sleep", "3600" }, resources = new { cpus = 0.1, memory = "16Mi", disk = "1Gi" } });
                submit.EnsureSuccessStatusCode();
                ids.Add(JsonDocument.Parse(await submit.Content.ReadAsStringAsync()).RootElement.GetProperty("id").GetString()!);
            }
            await bare.StandardInput.WriteLineAsync("sleep 10 3600");
            await bare.StandardInput.FlushAsync();
            await Poll.UntilAsync(async () =>
            {
                var running = 0;
                foreach (var id in ids)
                    if (JsonDocument.Parse(await http.GetStringAsync($"/api/v1/jobs/{id}")).RootElement.GetProperty("state").GetString() == "running") running++;
                return running;
            }, n => n == 10, TimeSpan.FromSeconds(120), "10 BatchRunner jobs to run", 500);
            await Poll.UntilAsync(() => ProcessingAsync(bareCs), n => n == 10, TimeSpan.FromSeconds(120), "10 Hangfire jobs to run", 500);
            await Task.Delay(TimeSpan.FromSeconds(SettleSeconds / 3));
            statements?.Mark();
            var busy = await WindowsAsync(node.Id, bare.Id, pgData, admin.ConnectionString, windowSeconds, windows);
            statements?.Report("10 running", windowSeconds * windows);
            foreach (var id in ids) await http.PostAsync($"/api/v1/jobs/{id}/cancel", null);
            bare.StandardInput.Close();
            await bare.WaitForExitAsync();
            await barePumps;
            return new Result(idle.Br, idle.Hf, busy.Br, busy.Hf, (idle.Background + busy.Background) / 2, windowSeconds, windows);
        }
        finally
        {
            if (bare is { HasExited: false }) bare.Kill(entireProcessTree: true);
            UnixSignals.Send(node.Id, UnixSignals.Term);
            await node.WaitForExitAsync();
            await pumps;
            try { Directory.Delete(Root, recursive: true); } catch (IOException) { }
        }
    }

    /// <summary>With BENCH_STATEMENTS=1: every statement the cluster runs is logged (log_min_duration_statement = 0), and the
    /// statements of each phase are counted by text (both contenders and the bench's own), to see which loop costs what.</summary>
    private sealed class StatementLog(string pgData, string adminCs)
    {
        private long _offset;

        public async Task StartAsync()
        {
            await using var conn = new NpgsqlConnection(adminCs);
            await conn.OpenAsync();
            await using (var set = new NpgsqlCommand("alter system set log_min_duration_statement = 0", conn)) await set.ExecuteNonQueryAsync();
            await using (var reload = new NpgsqlCommand("select pg_reload_conf()", conn)) await reload.ExecuteNonQueryAsync();
            await Task.Delay(500);
            Mark();
        }

        public void Mark() => _offset = Read().Length;

        private string Read() => string.Concat(Directory.GetFiles(Path.Combine(pgData, "log")).Order().Select(File.ReadAllText));

        public void Report(string phase, int seconds)
        {
            var text = Read()[(int)Math.Min(_offset, Read().Length)..];
            var counts = System.Text.RegularExpressions.Regex.Split(text, @"\n(?=\d{4}-\d\d-\d\d )")
                .Select(e => System.Text.RegularExpressions.Regex.Match(e, @"(?:statement|execute [^:]*): (.*)", System.Text.RegularExpressions.RegexOptions.Singleline))
                .Where(m => m.Success)
                .Select(m => string.Join(' ', m.Groups[1].Value.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries)))
                .Select(t => t.Length > 110 ? t[..110] : t)
                .GroupBy(t => t).Select(g => (Text: g.Key, Count: g.Count())).OrderByDescending(g => g.Count).ToList();
            Console.WriteLine($"statements, {phase} ({seconds} s, both contenders): {counts.Sum(c => c.Count) / (double)seconds:F1}/s");
            foreach (var (t, n) in counts.Take(25)) Console.WriteLine($"  {n / (double)seconds,6:F2}/s  {t}");
            Mark();
        }
    }

    private static async Task<int> ProcessingAsync(string cs)
    {
        await using var conn = new NpgsqlConnection(cs);
        await conn.OpenAsync();
        await using var cmd = new NpgsqlCommand("select count(*) from hangfire.job where statename = 'Processing'", conn);
        return (int)(long)(await cmd.ExecuteScalarAsync())!;
    }

    /// <summary>Medians over <paramref name="windows"/> windows of both contenders at once.</summary>
    private static async Task<(Sample Br, Sample Hf, double Background)> WindowsAsync(int nodePid, int barePid, string pgData, string adminCs, int seconds, int windows)
    {
        var br = new List<Sample>();
        var hf = new List<Sample>();
        var background = new List<double>();
        for (var w = 0; w < windows; w++)
        {
            var before = await SnapshotAsync(nodePid, barePid, pgData, adminCs);
            var clock = Stopwatch.StartNew();
            await Task.Delay(TimeSpan.FromSeconds(seconds));
            var after = await SnapshotAsync(nodePid, barePid, pgData, adminCs);
            var wall = clock.Elapsed.TotalSeconds;
            double Delta(Dictionary<int, double> a, Dictionary<int, double> b) => a.Sum(kv => kv.Value - b.GetValueOrDefault(kv.Key));
            br.Add(new Sample((after.Node.Self + after.Node.Helpers - before.Node.Self - before.Node.Helpers) / wall, Delta(after.BrBackends, before.BrBackends) / wall,
                ProcStat.StatusBytes(nodePid, "VmRSS"), after.BrBackends.Count, (after.BrTransactions - before.BrTransactions) / wall, (after.Node.Helpers - before.Node.Helpers) / wall));
            hf.Add(new Sample((after.Bare.Self + after.Bare.Helpers - before.Bare.Self - before.Bare.Helpers) / wall, Delta(after.HfBackends, before.HfBackends) / wall,
                ProcStat.StatusBytes(barePid, "VmRSS"), after.HfBackends.Count, (after.HfTransactions - before.HfTransactions) / wall, (after.Bare.Helpers - before.Bare.Helpers) / wall));
            background.Add(Delta(after.Others, before.Others) / wall);
        }
        return (Median(br), Median(hf), background.Order().ElementAt(background.Count / 2));
    }

    private static Sample Median(List<Sample> s)
    {
        T M<T>(Func<Sample, T> f) => s.Select(f).Order().ElementAt(s.Count / 2);
        return new Sample(M(x => x.ProcessCpuMsPerSecond), M(x => x.PostgresCpuMsPerSecond), M(x => x.RssBytes), M(x => x.Backends), M(x => x.TransactionsPerSecond),
            M(x => x.HelpersCpuMsPerSecond));
    }

    private sealed record Snapshot((double Self, double Helpers) Node, (double Self, double Helpers) Bare, Dictionary<int, double> BrBackends, Dictionary<int, double> HfBackends, Dictionary<int, double> Others,
        long BrTransactions, long HfTransactions);

    /// <summary>CPU ms so far of both processes and of each process of the cluster, by whom it serves (the bench's own
    /// query backend is left out).</summary>
    private static async Task<Snapshot> SnapshotAsync(int nodePid, int barePid, string pgData, string adminCs)
    {
        var byDatabase = new Dictionary<int, string>();
        long brTx = 0, hfTx = 0;
        int self;
        await using (var conn = new NpgsqlConnection(adminCs))
        {
            await conn.OpenAsync();
            self = conn.ProcessID;
            await using var cmd = new NpgsqlCommand("select pid, datname from pg_stat_activity where backend_type = 'client backend' and datname is not null", conn);
            await using var rd = await cmd.ExecuteReaderAsync();
            while (await rd.ReadAsync()) byDatabase[rd.GetInt32(0)] = rd.GetString(1);
            await rd.CloseAsync();
            // Transactions committed or rolled back per database (as the backends last reported them: about every second).
            await using var tx = new NpgsqlCommand("select datname, xact_commit + xact_rollback from pg_stat_database where datname is not null and datname not like 'template%'", conn);
            await using var rd2 = await tx.ExecuteReaderAsync();
            while (await rd2.ReadAsync())
                if (rd2.GetString(0) == BareDatabase) hfTx += rd2.GetInt64(1);
                else brTx += rd2.GetInt64(1);
        }
        var br = new Dictionary<int, double>();
        var hf = new Dictionary<int, double>();
        var others = new Dictionary<int, double>();
        foreach (var pid in ProcStat.ClusterProcesses(pgData))
        {
            if (pid == self || ProcStat.CpuMs(pid) is not { } cpu) continue;
            var target = byDatabase.GetValueOrDefault(pid) switch { BareDatabase => hf, null => others, _ => br };
            target[pid] = cpu;
        }
        return new Snapshot(ProcStat.TreeCpuMs(nodePid), ProcStat.TreeCpuMs(barePid), br, hf, others, brTx, hfTx);
    }
}
