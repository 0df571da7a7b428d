using System.Net;
using System.Net.Http.Headers;
using System.Text;
using BatchRunner.Server.Storage;
using Microsoft.Extensions.DependencyInjection;

namespace BatchRunner.Server.Tests.Observability;

/// <summary>The Hangfire dashboard as an operator sees it: BatchRunner job details, log tail, nodes page.</summary>
[Collection(ServerCollection.Name)]
public sealed class DashboardFacts(ServerFixture f)
{
    [Fact]
    public async Task JobPage_ShowsTheBatchRunnerJob_AndAnEscapedLogTail()
    {
        var name = "dash-" + Guid.NewGuid().ToString("N")[..8];
        var id = (await f.Api.SubmitAsync(new
        {
            name,
            image = f.Busybox,
            command = new[] { "/bin/sh", "-c", "for i in $(seq 1 60); do echo line-$i; done; echo '<script>alert(1)</script>'; echo err-line >&2; echo 7 > /outputs/out.txt" },
            resources = new { cpus = 0.25, memory = "48Mi" },
        })).GetProperty("id").GetString()!;
        var done = await f.Api.WaitForFinalAsync(id);
        Assert.Equal("succeeded", done.GetProperty("state").GetString());
        var hangfireId = (await f.App.Services.GetRequiredService<JobStore>().GetAsync(Guid.Parse(id), CancellationToken.None))!.HangfireJobId;
        Assert.NotNull(hangfireId);

        var page = await GetDashboardAsync($"/hangfire/jobs/details/{hangfireId}");
        Assert.Equal(HttpStatusCode.OK, page.Status);
        var html = page.Body;
        // Hangfire's own title reads as the BatchRunner job's name, not the C# method.
        Assert.Contains(name, html);
        Assert.DoesNotContain("JobPerformer.RunAsync", html);
        Assert.Contains("BatchRunner job", html);
        Assert.Contains(id, html);
        Assert.Contains(WebUtility.HtmlEncode(f.Busybox), html);
        Assert.Contains(done.GetProperty("imageDigest").GetString()!, html);
        Assert.Contains("0.25 CPU, 48Mi memory", html);
        Assert.Contains("succeeded", html);
        Assert.Contains("out.txt", html);
        Assert.Contains("CPU ", html);
        // The last 50 stdout lines: line-12 .. line-60 and the script line; never raw HTML from the job.
        Assert.Contains("line-60\n", html);
        Assert.Contains("line-12\n", html);
        Assert.DoesNotContain("line-11\n", html);
        Assert.Contains("&lt;script&gt;alert(1)&lt;/script&gt;", html);
        Assert.DoesNotContain("<script>alert(1)</script>", html);
        Assert.Contains("err-line", html);
    }

    [Fact]
    public async Task NodesPage_IsInTheNavigation_AndListsWorkers()
    {
        var home = await GetDashboardAsync("/hangfire");
        Assert.Equal(HttpStatusCode.OK, home.Status);
        Assert.Contains("/hangfire/batchrunner/nodes", home.Body);
        Assert.Contains("BatchRunner nodes", home.Body);

        var nodes = await GetDashboardAsync("/hangfire/batchrunner/nodes");
        Assert.Equal(HttpStatusCode.OK, nodes.Status);
        var node = f.App.Services.GetRequiredService<BatchRunner.Server.Nodes.NodeIdentity>().Name;
        Assert.Contains("<h1 class=\"page-header\">BatchRunner nodes</h1>", nodes.Body);
        Assert.Contains(WebUtility.HtmlEncode(node), nodes.Body);
        Assert.Contains("Worker processes (Hangfire servers)", nodes.Body);
        Assert.Contains("Capacity and allocation", nodes.Body);
        Assert.DoesNotContain("Node records unavailable", nodes.Body);
        // Node records come from the database as text, not as .NET objects (the queues column once read "System.String[]"),
        // and capacity from the node record (2 CPUs, 4Gi), not from this process's Prometheus gauges.
        Assert.DoesNotContain("System.String[]", nodes.Body);
        Assert.Contains("zone=a", nodes.Body);
        Assert.Contains(" / 4Gi", nodes.Body);
    }

    [Theory]
    [InlineData("/hangfire")]
    [InlineData("/hangfire/batchrunner/nodes")]
    [InlineData("/hangfire/jobs/details/1")]
    public async Task Dashboard_RefusesRequestsWithoutTheKey(string path)
    {
        var anonymous = await f.Anonymous.GetAsync(path);
        Assert.Equal(HttpStatusCode.Unauthorized, anonymous.StatusCode);
        Assert.DoesNotContain("BatchRunner job", await anonymous.Content.ReadAsStringAsync());

        using var wrong = new HttpRequestMessage(HttpMethod.Get, path);
        wrong.Headers.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes("admin:not-the-key")));
        Assert.Equal(HttpStatusCode.Unauthorized, (await f.Anonymous.SendAsync(wrong)).StatusCode);
    }

    private async Task<(HttpStatusCode Status, string Body)> GetDashboardAsync(string path)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, path);
        request.Headers.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes("operator:" + ServerFixture.ApiKey)));
        using var response = await f.Anonymous.SendAsync(request);
        return (response.StatusCode, await response.Content.ReadAsStringAsync());
    }
}
