namespace BatchRunner.Bench;

/// <summary>
/// The API rows of `summary` (issue 14): submission throughput against raw Hangfire enqueue, POST and GET-one p99 at a
/// fixed open-loop rate with 10,000 jobs queued against the targets (and Hangfire's own create and read at the
/// same rate, measured in the same run), the mixed POST + list figure, and database round trips per request. One server
/// (<see cref="LoadBench"/>), phases one after another.
/// </summary>
public static class ApiSummary
{
    public const string Area = "API";

    public static async Task AddRowsAsync(SummaryTable table, int jobs = 10_000, int seconds = 10, int rate = 100, int clients = 8)
    {
        LoadBench.Result r;
        try
        {
            r = await LoadBench.MeasureAsync(jobs, clients, seconds, rate);
        }
        catch (Exception e)
        {
            table.Failed(Area, $"POST/GET latency at {rate} req/s, {jobs:N0} queued", e);
            return;
        }
        string Ms(double v) => SummaryTable.Ms(v) + " ms";
        table.Add(new SummaryRow(Area, $"POST /api/v1/jobs throughput ({clients} clients)", $"{r.ApiJobsPerSecond:F0} jobs/s",
            $"raw Hangfire Create: {r.RawJobsPerSecond:F0} jobs/s", r.ApiJobsPerSecond / r.RawJobsPerSecond, "—", null));
        table.Add(new SummaryRow(Area, $"POST p99 at {rate} req/s open loop, {r.Queued:N0} queued", $"{Ms(r.Post.P99)} (p50 {Ms(r.Post.P50)})",
            $"raw Hangfire Create p99: {Ms(r.RawCreate.P99)}", r.Post.P99 / r.RawCreate.P99, "< 50 ms", r.Post.P99 < 50));
        table.Add(new SummaryRow(Area, $"GET /api/v1/jobs/{{id}} p99 at {rate} req/s", $"{Ms(r.GetOne.P99)} (p50 {Ms(r.GetOne.P50)})",
            $"raw Hangfire GetJobData p99: {Ms(r.RawGet.P99)}", r.GetOne.P99 / r.RawGet.P99, "< 10 ms", r.GetOne.P99 < 10));
        table.Add(new SummaryRow(Area, $"mixed {rate} req/s: POST p99 / GET list (100) p99", $"{Ms(r.MixedPost.P99)} / {Ms(r.MixedList.P99)}",
            "—", null, "—", null));
        table.Add(new SummaryRow(Area, "database round trips per request (POST / GET one)", $"{r.PostRoundTrips:F1} / {r.GetOneRoundTrips:F1}",
            "—", null, "—", null));
    }
}
