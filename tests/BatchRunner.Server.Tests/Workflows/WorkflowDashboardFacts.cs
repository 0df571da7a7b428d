using System.Net;
using System.Net.Http.Headers;
using System.Text;
using BatchRunner.Server.Storage;
using BatchRunner.Testing;
using Microsoft.Extensions.DependencyInjection;
using static BatchRunner.Testing.BatchRunnerClient;

namespace BatchRunner.Server.Tests.Workflows;

/// <summary>A workflow as an operator follows it in the Hangfire dashboard: each job's page links its array, children and dependencies.</summary>
[Collection(ServerCollection.Name)]
public sealed class WorkflowDashboardFacts(ServerFixture f)
{
    [Fact]
    public async Task JobPages_ShowTheParent_TheChildren_AndTheDependencies()
    {
        var array = await f.Api.SubmitIdAsync(new { name = "dash-array", image = f.Busybox, command = new[] { "true" }, array = new { size = 2, parallelism = 2 } });
        var after = await f.Api.SubmitIdAsync(new { name = "dash-after", image = f.Busybox, command = new[] { "true" }, dependsOn = new[] { new { job = array, condition = "finished" } } });
        await f.Api.SucceededStdoutAsync(after);
        var child0 = await f.Api.GetJobAsync($"{array}:0");

        var arrayPage = await PageAsync(array);
        Assert.Contains("<h4>Array <small>2 children, at most 2 at once</small></h4>", arrayPage);
        Assert.Contains("succeeded 2", arrayPage);
        Assert.Contains(Link(await HangfireIdAsync(Id(child0))), arrayPage);
        Assert.Contains("<h4>Needed by</h4>", arrayPage);
        Assert.Contains(Link(await HangfireIdAsync(after)), arrayPage);

        var childPage = await PageAsync(Id(child0));
        Assert.Contains("Index 0 of 2 in array", childPage);
        Assert.Contains(Link(await HangfireIdAsync(array)), childPage);

        var afterPage = await PageAsync(after);
        Assert.Contains("<h4>Depends on</h4>", afterPage);
        Assert.Contains($"<code>{array}</code></a> dash-array</td><td>finished</td>", afterPage);
    }

    private static string Link(string hangfireId) => $"href=\"/hangfire/jobs/details/{hangfireId}\"";

    private async Task<string> HangfireIdAsync(string id) =>
        (await f.App.Services.GetRequiredService<JobStore>().GetAsync(Guid.Parse(id), CancellationToken.None))!.HangfireJobId!;

    private async Task<string> PageAsync(string id)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, $"/hangfire/jobs/details/{await HangfireIdAsync(id)}");
        request.Headers.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes("operator:" + ServerFixture.ApiKey)));
        using var response = await f.Anonymous.SendAsync(request);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return await response.Content.ReadAsStringAsync();
    }
}
