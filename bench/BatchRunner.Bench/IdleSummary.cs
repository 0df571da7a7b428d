namespace BatchRunner.Bench;

/// <summary>
/// The idle rows of `summary` (issue 14): CPU and RSS of an idle node and of one running 10 long jobs, against a bare
/// Hangfire server on Hangfire's defaults measured at the same time on the same cluster (<see cref="IdleBench"/>). CPU is
/// the process's plus its PostgreSQL backends'; the ratio is BatchRunner ÷ Hangfire defaults.
/// </summary>
public static class IdleSummary
{
    public const string Area = "idle";

    public static async Task AddRowsAsync(SummaryTable table, int windowSeconds = 20, int windows = 3)
    {
        IdleBench.Result r;
        try
        {
            r = await IdleBench.MeasureAsync(windowSeconds, windows);
        }
        catch (Exception e)
        {
            table.Failed(Area, "idle and 10-running node cost", e);
            return;
        }
        static string Cpu(IdleBench.Sample s) => $"{SummaryTable.Ms(s.TotalCpuMsPerSecond)} ms/s ({SummaryTable.Ms(s.ProcessCpuMsPerSecond)} + PG {SummaryTable.Ms(s.PostgresCpuMsPerSecond)})";
        static string Rss(IdleBench.Sample s) => $"{s.RssBytes / 1048576.0:F0} MiB";
        // "Halve whichever is worst against the Hangfire defaults": the row with the highest ratio now is held to half its
        // figure when the issue was filed (idle's first table, BatchRunner at 5e40c9b: the same measure, this machine).
        (string What, string Ours, string Theirs, double Value, double Ratio, double AtStart, string Unit)[] rows =
        [
            ("idle node CPU (process + its PG backends)", Cpu(r.BatchRunnerIdle), Cpu(r.HangfireIdle), r.BatchRunnerIdle.TotalCpuMsPerSecond,
                r.BatchRunnerIdle.TotalCpuMsPerSecond / r.HangfireIdle.TotalCpuMsPerSecond, 26.4, "ms/s"),
            ("idle node RSS", Rss(r.BatchRunnerIdle), Rss(r.HangfireIdle), r.BatchRunnerIdle.RssBytes / 1048576.0,
                (double)r.BatchRunnerIdle.RssBytes / r.HangfireIdle.RssBytes, 145, "MiB"),
            ("10 sleep jobs running: CPU", Cpu(r.BatchRunnerBusy), Cpu(r.HangfireBusy), r.BatchRunnerBusy.TotalCpuMsPerSecond,
                r.BatchRunnerBusy.TotalCpuMsPerSecond / r.HangfireBusy.TotalCpuMsPerSecond, 57.0, "ms/s"),
            ("10 sleep jobs running: RSS", Rss(r.BatchRunnerBusy), Rss(r.HangfireBusy), r.BatchRunnerBusy.RssBytes / 1048576.0,
                (double)r.BatchRunnerBusy.RssBytes / r.HangfireBusy.RssBytes, 189, "MiB"),
        ];
        var worst = rows.MaxBy(row => row.Ratio).What;
        foreach (var row in rows)
        {
            var isWorst = row.What == worst;
            table.Add(new SummaryRow(Area, row.What, row.Ours, "Hangfire defaults: " + row.Theirs, row.Ratio,
                isWorst ? $"worst vs defaults: ≤ half of {row.AtStart:0.#} {row.Unit} (5e40c9b)" : "report",
                isWorst ? row.Value <= row.AtStart / 2 : null));
        }
    }
}
