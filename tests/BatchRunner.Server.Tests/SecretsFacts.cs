using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using BatchRunner.Server.Storage;
using BatchRunner.Testing;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;

namespace BatchRunner.Server.Tests;

/// <summary>
/// secretEnv: injected into the container, encrypted at rest, never in any API answer or dashboard page; plain env
/// values are shown. (BatchRunner's own log lines at Debug level are checked on real processes in ClusterFacts.)
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class SecretsFacts(ServerFixture f)
{
    private static string Sha256(string s) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(s)));

    [Fact]
    public async Task SecretEnv_ReachesTheContainer_AndIsNeverShownOrStoredInTheClear()
    {
        var secret = "s3cr3t-" + Guid.NewGuid().ToString("N");
        using var user = await f.Api.ClientForNewKeyAsync("t-" + Guid.NewGuid().ToString("N")[..10], "user");
        var spec = new
        {
            image = f.Busybox,
            // The job proves it got the value without printing it: its hash goes to the outputs.
            command = new[] { "sh", "-c", "printf %s \"$TOKEN\" | sha256sum | cut -c1-64 > /outputs/token.sha256; echo \"param=$PARAM\"; sleep 1" },
            env = new Dictionary<string, string> { ["PARAM"] = "visible-42" },
            secretEnv = new Dictionary<string, string> { ["TOKEN"] = secret },
        };
        var answers = new List<string>();
        using var post = new HttpRequestMessage(HttpMethod.Post, "/api/v1/jobs") { Content = JsonContent.Create(spec) };
        post.Headers.Add("Idempotency-Key", "secret-job");
        var created = await user.Http.SendAsync(post);
        answers.Add(await created.Content.ReadAsStringAsync());
        var job = await BatchRunnerClient.CreatedAsync(created);
        var id = BatchRunnerClient.Id(job);
        // Plain env values are shown (a v1 behaviour change), secret ones by name only.
        Assert.Equal("visible-42", job.GetProperty("env").GetProperty("PARAM").GetString());
        Assert.Equal(["PARAM"], job.GetProperty("envNames").EnumerateArray().Select(e => e.GetString()));
        Assert.Equal(["TOKEN"], job.GetProperty("secretEnvNames").EnumerateArray().Select(e => e.GetString()));

        // While it runs, the bundle's config.json (the one file that must hold the value) is readable by root only.
        await user.WaitForStateAsync(id, s => s is "running" or "succeeded");
        var configs = Directory.Exists(Path.Combine(f.DataDir, "run"))
            ? Directory.GetFiles(Path.Combine(f.DataDir, "run"), "config.json", SearchOption.AllDirectories).Where(p => p.Contains(id)).ToList()
            : [];
        foreach (var config in configs) Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(config));

        Assert.Equal("param=visible-42\n", await user.SucceededStdoutAsync(id));
        Assert.Equal(Sha256(secret) + "\n", await user.OutputAsync(id, "token.sha256"));

        // Every answer about the job, to its owner and to an admin, and the dashboard's page.
        foreach (var path in new[] { $"/api/v1/jobs/{id}", "/api/v1/jobs?limit=1000", $"/api/v1/jobs/{id}/logs", $"/api/v1/jobs/{id}/outputs" })
        {
            answers.Add(await user.Http.GetStringAsync(path));
            answers.Add(await f.Client.GetStringAsync(path));
        }
        answers.Add(await (await user.CancelAsync(id)).Content.ReadAsStringAsync());
        var hangfireId = (await f.App.Services.GetRequiredService<JobStore>().GetAsync(Guid.Parse(id), CancellationToken.None))!.HangfireJobId;
        using var page = new HttpRequestMessage(HttpMethod.Get, $"/hangfire/jobs/details/{hangfireId}");
        page.Headers.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes($"admin:{ServerFixture.ApiKey}")));
        var html = await (await f.Anonymous.SendAsync(page)).Content.ReadAsStringAsync();
        Assert.Contains(id, html);
        Assert.Contains("PARAM=visible-42", html);
        Assert.Contains("<code>TOKEN</code> <em>(secret)</em>", html);
        answers.Add(html);
        foreach (var answer in answers) Assert.DoesNotContain(secret, answer);

        // At rest: not in the spec column; encrypted in its own.
        var db = f.App.Services.GetRequiredService<NpgsqlDataSource>();
        await using var cmd = db.CreateCommand("select spec::text, secrets from batchrunner.jobs where id = @id");
        cmd.Parameters.AddWithValue("id", Guid.Parse(id));
        await using var rd = await cmd.ExecuteReaderAsync();
        Assert.True(await rd.ReadAsync());
        Assert.DoesNotContain(secret, rd.GetString(0));
        var stored = (byte[])rd.GetValue(1);
        Assert.True(stored.Length > 32);
        Assert.DoesNotContain(secret, Encoding.Latin1.GetString(stored));
        Assert.DoesNotContain(Sha256(secret), Encoding.Latin1.GetString(stored));

        // A repeated submission is recognised by its secret values too, without any hash of them being stored.
        async Task<HttpStatusCode> RepeatAsync(string value)
        {
            using var repeat = new HttpRequestMessage(HttpMethod.Post, "/api/v1/jobs")
            {
                Content = JsonContent.Create(spec with { secretEnv = new Dictionary<string, string> { ["TOKEN"] = value } }),
            };
            repeat.Headers.Add("Idempotency-Key", "secret-job");
            var r = await user.Http.SendAsync(repeat);
            Assert.DoesNotContain(secret, await r.Content.ReadAsStringAsync());
            return r.StatusCode;
        }
        Assert.Equal(HttpStatusCode.OK, await RepeatAsync(secret));
        Assert.Equal(HttpStatusCode.Conflict, await RepeatAsync(secret + "-other"));
    }

    [Fact]
    public async Task SecretEnv_NamedAlsoInEnv_Gets400_WithoutQuotingTheValue()
    {
        var response = await f.Api.PostJobAsync(new
        {
            image = f.Busybox,
            env = new Dictionary<string, string> { ["TOKEN"] = "a" },
            secretEnv = new Dictionary<string, string> { ["TOKEN"] = "hidden-value-77", ["bad name"] = "hidden-value-78" },
        });
        var text = await response.Content.ReadAsStringAsync();
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var errors = JsonDocument.Parse(text).RootElement.GetProperty("errors");
        Assert.True(errors.TryGetProperty("secretEnv.TOKEN", out _), text);
        Assert.True(errors.TryGetProperty("secretEnv.bad name", out _), text);
        Assert.DoesNotContain("hidden-value", text);
    }
}
