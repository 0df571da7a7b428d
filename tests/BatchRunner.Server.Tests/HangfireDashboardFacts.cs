using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.RegularExpressions;
using BatchRunner.Server.Nodes;
using BatchRunner.Server.Storage;
using BatchRunner.Testing;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;

namespace BatchRunner.Server.Tests;

/// <summary>
/// Hangfire's own dashboard: admins only, its state-changing POSTs need the anti-forgery token of its pages, and what
/// is done there to a queued job's message never leaves the job queued for ever (QueueReconciler).
/// </summary>
[Collection(ServerCollection.Name)]
public sealed partial class HangfireDashboardFacts(ServerFixture f)
{
    private static AuthenticationHeaderValue Basic(string key) => new("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes("someone:" + key)));

    [GeneratedRegex("<meta name=\"csrf-token\" content=\"([^\"]+)\"")]
    private static partial Regex CsrfToken();

    [Fact]
    public async Task Dashboard_IsForAdminKeysOnly()
    {
        var tenant = "t-" + Guid.NewGuid().ToString("N")[..10];
        var (_, admin) = await f.Api.CreateKeyAsync(tenant, "admin");
        var (_, user) = await f.Api.CreateKeyAsync(tenant, "user");
        var (_, viewer) = await f.Api.CreateKeyAsync(tenant, "viewer");
        async Task<HttpStatusCode> GetAsync(AuthenticationHeaderValue? auth)
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, "/hangfire");
            request.Headers.Authorization = auth;
            return (await f.Anonymous.SendAsync(request)).StatusCode;
        }
        Assert.Equal(HttpStatusCode.OK, await GetAsync(Basic(admin)));
        Assert.Equal(HttpStatusCode.OK, await GetAsync(new AuthenticationHeaderValue("Bearer", admin)));
        Assert.Equal(HttpStatusCode.Forbidden, await GetAsync(Basic(user)));
        Assert.Equal(HttpStatusCode.Forbidden, await GetAsync(new AuthenticationHeaderValue("Bearer", viewer)));
        using var anonymous = await f.Anonymous.GetAsync("/hangfire");
        Assert.Equal(HttpStatusCode.Unauthorized, anonymous.StatusCode);
        Assert.StartsWith("Basic", anonymous.Headers.WwwAuthenticate.ToString());
    }

    [Fact]
    public async Task JobDeletedInTheDashboard_EndsCancelled_AndALostMessage_IsReplaced()
    {
        // The "limited" queue runs one job at a time: while the first sleeps, the others stay queued.
        var blocker = await f.Api.SubmitIdAsync(new { image = f.Busybox, command = new[] { "sleep", "60" }, queue = "limited", resources = new { cpus = 0.1 } });
        await f.Api.WaitForStateAsync(blocker, s => s == "running");
        var deleted = await f.Api.SubmitIdAsync(new { image = f.Busybox, command = new[] { "true" }, queue = "limited", resources = new { cpus = 0.1 } });
        var lost = await f.Api.SubmitIdAsync(new { image = f.Busybox, command = new[] { "echo", "ran" }, queue = "limited", resources = new { cpus = 0.1 } });
        var store = f.App.Services.GetRequiredService<JobStore>();
        var hangfireId = (await store.GetAsync(Guid.Parse(deleted), CancellationToken.None))!.HangfireJobId!;

        using var browser = new HttpClient(new HttpClientHandler { CookieContainer = new CookieContainer() }) { BaseAddress = f.Client.BaseAddress };
        browser.DefaultRequestHeaders.Authorization = Basic(ServerFixture.ApiKey);
        // A POST without the page's anti-forgery token (what a cross-site form would send along with the browser's
        // Basic credentials) is refused and changes nothing.
        var forged = await browser.PostAsync($"/hangfire/jobs/actions/delete/{hangfireId}", null);
        Assert.Equal(HttpStatusCode.Forbidden, forged.StatusCode);
        Assert.Equal("queued", BatchRunnerClient.State(await f.Api.GetJobAsync(deleted)));

        // With the token of a dashboard page (and its cookie), as the dashboard's own button sends it.
        var page = await browser.GetStringAsync($"/hangfire/jobs/details/{hangfireId}");
        using var delete = new HttpRequestMessage(HttpMethod.Post, $"/hangfire/jobs/actions/delete/{hangfireId}");
        delete.Headers.Add("RequestVerificationToken", WebUtility.HtmlDecode(CsrfToken().Match(page).Groups[1].Value));
        var accepted = await browser.SendAsync(delete);
        Assert.True(accepted.IsSuccessStatusCode, $"{(int)accepted.StatusCode}");

        var cancelled = await f.Api.WaitForFinalAsync(deleted, TimeSpan.FromSeconds(30));
        Assert.Equal("cancelled", BatchRunnerClient.State(cancelled));
        Assert.Equal(QueueReconciler.DeletedMessage, cancelled.GetProperty("message").GetString());

        // A message that is gone altogether (expired, removed by hand): the job gets a new one and runs.
        var lostHangfireId = (await store.GetAsync(Guid.Parse(lost), CancellationToken.None))!.HangfireJobId!;
        await using (var cmd = f.App.Services.GetRequiredService<NpgsqlDataSource>().CreateCommand("delete from hangfire.job where id = @id"))
        {
            cmd.Parameters.AddWithValue("id", long.Parse(lostHangfireId));
            Assert.Equal(1, await cmd.ExecuteNonQueryAsync());
        }
        await f.App.Services.GetRequiredService<QueueReconciler>().ReconcileAsync(TimeSpan.Zero, CancellationToken.None);
        Assert.NotEqual(lostHangfireId, (await store.GetAsync(Guid.Parse(lost), CancellationToken.None))!.HangfireJobId);
        Assert.Equal(HttpStatusCode.Accepted, (await f.Api.CancelAsync(blocker)).StatusCode);
        Assert.Equal("ran\n", await f.Api.SucceededStdoutAsync(lost));
    }
}
