using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;
using BatchRunner.Testing;

namespace BatchRunner.Server.Tests;

/// <summary>Air-gapped import, the image list and delete through the API, and layered images in jobs.</summary>
[Collection(ServerCollection.Name)]
public sealed class ImagesApiFacts(ServerFixture f)
{
    private static string State(JsonElement j) => j.GetProperty("state").GetString()!;

    internal static async Task<string> TarLayoutAsync()
    {
        var tar = Path.Combine("/tmp", $"br-layout-{Guid.NewGuid():N}.tar");
        await ExternalCommand.RunAsync("tar", ["-C", await TestImages.LayoutAsync(), "-cf", tar, "."]);
        return tar;
    }

    [Fact]
    public async Task ImportedImage_RunsWithPullPolicyNever_IsListed_AndCanBeDeleted()
    {
        var tar = await TarLayoutAsync();
        try
        {
            HttpResponseMessage imported;
            await using (var body = File.OpenRead(tar))
            {
                using var content = new StreamContent(body);
                content.Headers.ContentType = new MediaTypeHeaderValue("application/x-tar");
                imported = await f.Client.PostAsync("/api/v1/images?name=airgap/tool:busybox", content);
            }
            var text = await imported.Content.ReadAsStringAsync();
            Assert.True(imported.StatusCode == HttpStatusCode.Created, text);
            var digest = JsonDocument.Parse(text).RootElement.GetProperty("digest").GetString();

            var list = JsonDocument.Parse(await f.Client.GetStringAsync("/api/v1/images")).RootElement;
            Assert.Contains(list.EnumerateArray(), i => i.GetProperty("name").GetString()!.Contains("airgap/tool:busybox"));

            var id = (await f.Api.SubmitAsync(new { image = "airgap/tool:busybox", pullPolicy = "never", command = new[] { "/bin/sh", "-c", "echo offline" } }))
                .GetProperty("id").GetString()!;
            var done = await f.Api.WaitForFinalAsync(id);
            Assert.Equal("succeeded", State(done));
            Assert.Equal(digest, done.GetProperty("imageDigest").GetString());
            Assert.Equal("offline\n", await f.Client.GetStringAsync($"/api/v1/jobs/{id}/logs"));

            Assert.Equal(HttpStatusCode.NoContent, (await f.Client.DeleteAsync("/api/v1/images/airgap/tool:busybox")).StatusCode);
            Assert.Equal(HttpStatusCode.NotFound, (await f.Client.DeleteAsync("/api/v1/images/airgap/tool:busybox")).StatusCode);
            var gone = await f.Api.WaitForFinalAsync((await f.Api.SubmitAsync(new { image = "airgap/tool:busybox", pullPolicy = "never", command = new[] { "true" } }))
                .GetProperty("id").GetString()!);
            Assert.Equal("image_pull_failed", gone.GetProperty("reason").GetString());
        }
        finally
        {
            File.Delete(tar);
        }
    }

    [Fact]
    public async Task Import_RefusesSomethingThatIsNotAnImageArchive()
    {
        using var content = new ByteArrayContent("definitely not a tar"u8.ToArray());
        content.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
        var r = await f.Client.PostAsync("/api/v1/images?name=junk:1", content);
        Assert.Equal(HttpStatusCode.BadRequest, r.StatusCode);
        Assert.Equal("application/problem+json", r.Content.Headers.ContentType?.MediaType);
    }

    [Fact]
    public async Task Delete_RefusesAnImageARunningJobUses()
    {
        var id = (await f.Api.SubmitAsync(new { image = f.Busybox, command = new[] { "sleep", "30" } })).GetProperty("id").GetString()!;
        await f.Api.WaitForStateAsync(id, s => s == "running", TimeSpan.FromSeconds(30));
        var name = Uri.EscapeDataString(f.Busybox).Replace("%2F", "/");
        Assert.Equal(HttpStatusCode.Conflict, (await f.Client.DeleteAsync($"/api/v1/images/{name}")).StatusCode);
        await f.Client.PostAsync($"/api/v1/jobs/{id}/cancel", null);
        await f.Api.WaitForFinalAsync(id);
    }

    [Fact]
    public async Task LayeredImage_AFileDeletedInAnUpperLayer_IsAbsentInTheContainer()
    {
        var image = await TestImages.PushLayeredAsync(f.Registry);
        var id = (await f.Api.SubmitAsync(new
        {
            image,
            command = new[] { "/bin/sh", "-c", $"ls {TestImages.LayeredKeptFile} {TestImages.LayeredTopFile}; ls {TestImages.LayeredDeletedFile} 2>/dev/null || echo deleted-is-absent" },
        })).GetProperty("id").GetString()!;
        var done = await f.Api.WaitForFinalAsync(id);
        Assert.Equal("succeeded", State(done));
        var log = await f.Client.GetStringAsync($"/api/v1/jobs/{id}/logs");
        Assert.Contains(TestImages.LayeredKeptFile, log);
        Assert.Contains(TestImages.LayeredTopFile, log);
        Assert.Contains("deleted-is-absent", log);
    }
}
