using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;
using BatchRunner.Testing;

namespace BatchRunner.Server.Tests;

/// <summary>
/// AllowedRegistries end to end: a job naming a registry the node may not contact fails with image_pull_failed and
/// a message naming the host and the setting, before any request is made to it; imported images are not affected.
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class RegistryPolicyFacts(ServerFixture f)
{
    private static async Task<JsonElement> RunAsync(BatchRunnerClient api, string image) =>
        await api.WaitForFinalAsync(await api.SubmitIdAsync(new { image, command = new[] { "/bin/sh", "-c", "echo ran" } }));

    private static void AssertRefused(JsonElement job, params string[] parts)
    {
        Assert.Equal("failed", job.GetProperty("state").GetString());
        Assert.Equal("image_pull_failed", job.GetProperty("reason").GetString());
        var message = job.GetProperty("message").GetString()!;
        Assert.Contains(": pull refused: ", message);
        Assert.Contains("BatchRunner:AllowedRegistries", message);
        foreach (var p in parts) Assert.Contains(p, message);
    }

    [Fact]
    public async Task DefaultServer_RefusesLoopbackMetadataAndLocalhostRegistries_ButRunsImportedImages()
    {
        // Nothing configured about registries: the defaults decide.
        await using var server = await ServerProcess.StartAsync("registry-defaults",
            ["--BatchRunner:Workers=2", "--Logging:LogLevel:Default=Warning", "--Logging:LogLevel:Microsoft.Hosting.Lifetime=Information"]);
        var before = f.Registry.Log.Length;

        AssertRefused(await RunAsync(server.Api, f.Busybox), $"registry {f.Registry.Host}: 127.0.0.1 is a loopback address");
        AssertRefused(await RunAsync(server.Api, "169.254.169.254/latest/meta-data:1"), "169.254.169.254 is a cloud metadata address");
        AssertRefused(await RunAsync(server.Api, $"localhost:{f.Registry.Port}/demo/busybox:1"), "localhost resolves to ", "a loopback address");
        Assert.DoesNotContain("GET /v2/", f.Registry.Log[before..]); // refused before asking, not after

        // An import needs no registry: an image named after a loopback registry still runs.
        var tar = await ImagesApiFacts.TarLayoutAsync();
        try
        {
            await using var body = File.OpenRead(tar);
            using var content = new StreamContent(body);
            content.Headers.ContentType = new MediaTypeHeaderValue("application/x-tar");
            var imported = await server.Api.Http.PostAsync("/api/v1/images?name=127.0.0.1:5999/imported/tool:busybox", content);
            Assert.True(imported.StatusCode == HttpStatusCode.Created, await imported.Content.ReadAsStringAsync());
        }
        finally
        {
            File.Delete(tar);
        }
        Assert.Equal("succeeded", (await RunAsync(server.Api, "127.0.0.1:5999/imported/tool:busybox")).GetProperty("state").GetString());
    }

    [Fact]
    public async Task AllowedLoopbackAddress_DoesNotAllowANameResolvingToIt()
    {
        // The fixture names 127.0.0.1 (so its registries work) but not localhost: the address a name resolves to
        // is judged, and only an entry naming the host allows a special one.
        var job = await RunAsync(f.Api, $"localhost:{f.Registry.Port}/demo/busybox:1");
        AssertRefused(job, "localhost resolves to ", "refused unless BatchRunner:AllowedRegistries names the host explicitly");
    }
}
