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
        const string target = "report; halve the worst vs defaults";
        table.Add(new SummaryRow(Area, "idle node CPU (process + its PG backends)", Cpu(r.BatchRunnerIdle), "Hangfire defaults: " + Cpu(r.HangfireIdle),
            r.BatchRunnerIdle.TotalCpuMsPerSecond / r.HangfireIdle.TotalCpuMsPerSecond, target, null));
        table.Add(new SummaryRow(Area, "idle node RSS", Rss(r.BatchRunnerIdle), "Hangfire defaults: " + Rss(r.HangfireIdle),
            (double)r.BatchRunnerIdle.RssBytes / r.HangfireIdle.RssBytes, target, null));
        table.Add(new SummaryRow(Area, "10 sleep jobs running: CPU", Cpu(r.BatchRunnerBusy), "Hangfire defaults: " + Cpu(r.HangfireBusy),
            r.BatchRunnerBusy.TotalCpuMsPerSecond / r.HangfireBusy.TotalCpuMsPerSecond, target, null));
        table.Add(new SummaryRow(Area, "10 sleep jobs running: RSS", Rss(r.BatchRunnerBusy), "Hangfire defaults: " + Rss(r.HangfireBusy),
            (double)r.BatchRunnerBusy.RssBytes / r.HangfireBusy.RssBytes, target, null));
    }
}
