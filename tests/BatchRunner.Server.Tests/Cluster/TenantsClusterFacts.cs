using System.Diagnostics;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using BatchRunner.Testing;
using Xunit.Abstractions;

namespace BatchRunner.Server.Tests.Cluster;

/// <summary>
/// Keys, tenants and secrets across real processes: a key made on one node works on another, and once revoked is
/// refused there within seconds; a secret encrypted by the API node is decrypted by the worker; another tenant's job
/// is 404 before anything is forwarded; and no log line of either process, at Debug level, holds a secret or a key.
/// </summary>
[Collection(ClusterCollection.Name)]
public sealed class TenantsClusterFacts(ITestOutputHelper output)
{
    /// <summary>Every category at Debug, including those the shipped appsettings.json turns down.</summary>
    private static readonly string[] DebugLogs =
    [
        "--Logging:LogLevel:Default=Debug", "--Logging:LogLevel:BatchRunner=Debug", "--Logging:LogLevel:Microsoft.AspNetCore=Debug",
        "--Logging:LogLevel:BatchRunner.Server.Auth=Debug", "--Logging:LogLevel:Microsoft.Hosting.Lifetime=Debug",
    ];

    private const string SecretsKey = "cluster-key-ring-key-0123456789abcdef";

    [Fact]
    public async Task KeysAndSecrets_HoldAcrossNodes_AndARevokedKeyIsRefusedOnEveryNodeWithinSeconds()
    {
        await using var c = await TestCluster.StartAsync();
        string[] settings = [.. DebugLogs, $"--BatchRunner:SecretsKey={SecretsKey}"];
        await c.StartNodeAsync("api", role: "api", extra: settings);
        var w1 = await c.StartNodeAsync("w1", role: "all", extra: settings);
        var (keyId, key) = await c.Api.CreateKeyAsync("team-a", "user");
        var (_, otherKey) = await c.Api.CreateKeyAsync("team-b", "user");
        using var viaApi = c.Api.WithKey(key);
        using var viaWorker = new BatchRunnerClient(w1.Url, key);
        using var stranger = c.Api.WithKey(otherKey);

        // Submitted through the API node, run (and its secret decrypted) on w1, its logs forwarded back.
        var secret = "cluster-secret-" + Guid.NewGuid().ToString("N");
        var id = await viaApi.SubmitIdAsync(new
        {
            image = c.Busybox,
            command = new[] { "sh", "-c", "printf %s \"$TOKEN\" | sha256sum | cut -c1-64; sleep 0.5" },
            secretEnv = new Dictionary<string, string> { ["TOKEN"] = secret },
        });
        var done = await c.WaitFinalAsync(id);
        Assert.Equal("w1", done.GetProperty("node").GetString());
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(secret))) + "\n", await viaApi.LogsAsync(id));
        Assert.Equal(id, BatchRunnerClient.Id(await viaWorker.GetJobAsync(id)));

        // Another tenant: 404 on the API node, which never forwards the request to w1.
        foreach (var path in new[] { $"/api/v1/jobs/{id}/logs", $"/api/v1/jobs/{id}/logs?follow=true", $"/api/v1/jobs/{id}/outputs/x" })
            Assert.Equal(HttpStatusCode.NotFound, (await stranger.Http.GetAsync(path)).StatusCode);

        // Revoked on the API node: refused there at once, and on w1 within its key cache's 3 s.
        Assert.Equal(HttpStatusCode.NoContent, (await c.Api.RevokeKeyAsync(keyId)).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await viaApi.Http.GetAsync("/api/v1/jobs")).StatusCode);
        var revokedAt = Stopwatch.StartNew();
        await Poll.UntilAsync(async () => (await viaWorker.Http.GetAsync("/api/v1/jobs")).StatusCode, s => s == HttpStatusCode.Unauthorized,
            TimeSpan.FromSeconds(10), "the revoked key refused on w1", 100);
        Assert.InRange(revokedAt.Elapsed.TotalSeconds, 0, 5);
        output.WriteLine($"revoked key refused on the other node after {revokedAt.Elapsed.TotalSeconds:0.00} s");

        // Both processes logged at Debug level the whole time: not one line holds the secret or a key.
        foreach (var node in new[] { "api", "w1" })
        {
            var log = await File.ReadAllTextAsync(Path.Combine(c.Root, $"{node}.log"));
            Assert.Contains(id, log);
            Assert.DoesNotContain(secret, log);
            Assert.DoesNotContain(key, log);
            Assert.DoesNotContain(otherKey, log);
            Assert.DoesNotContain(TestCluster.ApiKey, log);
        }
        // The key ring every node decrypted with is stored encrypted with BatchRunner:SecretsKey, not as it is.
        await using (var db = Npgsql.NpgsqlDataSource.Create(c.Postgres!.ConnectionString))
        await using (var cmd = db.CreateCommand("select xml from batchrunner.data_protection_keys"))
        await using (var rd = await cmd.ExecuteReaderAsync())
        {
            var keys = 0;
            while (await rd.ReadAsync())
            {
                keys++;
                Assert.Contains("batchrunnerEncryptedKey", rd.GetString(0));
                Assert.DoesNotContain("<value>", rd.GetString(0));
            }
            Assert.True(keys >= 1);
        }
        // The request lines name the key by its id.
        Assert.Contains($", key {keyId}", await File.ReadAllTextAsync(Path.Combine(c.Root, "api.log")));
    }
}
