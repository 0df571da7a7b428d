using System.Net;
using System.Text.Json;
using BatchRunner.Testing;

namespace BatchRunner.Server.Tests;

/// <summary>All of a job's outputs in one download (issue 19, item 6): outputs.zip and outputs.tar.gz hold exactly the
/// listed files, each with the listed sha256.</summary>
[Collection(ServerCollection.Name)]
public sealed class OutputArchiveFacts(ServerFixture f)
{
    [Fact]
    public async Task OutputsZipAndTarGz_HoldEveryListedFile_WithItsSha256_AndNothingElse()
    {
        const string script = """
            mkdir -p /outputs/models/ckpt '/outputs/with space' && echo '{"acc": 0.93}' > /outputs/metrics.json
            head -c 3000000 /dev/urandom > /outputs/models/ckpt/weights.bin && : > /outputs/empty.txt
            echo ünïcode > '/outputs/with space/notes ü.txt' && ln -s /etc/passwd /outputs/link-out && ln -s metrics.json /outputs/link-in
            """;
        var id = await f.Api.SubmitIdAsync(new { image = f.Busybox, command = new[] { "/bin/sh", "-c", script }, resources = new { memory = "64Mi" } });
        await f.Api.SucceededStdoutAsync(id);
        var listed = OutputArchives.Listed(await f.Api.OutputsAsync(id));
        Assert.Equal(["empty.txt", "metrics.json", "models/ckpt/weights.bin", "with space/notes ü.txt"], listed.Keys.Order(StringComparer.Ordinal));

        var zip = await f.Client.GetAsync($"/api/v1/jobs/{id}/outputs.zip");
        Assert.Equal(HttpStatusCode.OK, zip.StatusCode);
        Assert.Equal("application/zip", zip.Content.Headers.ContentType?.MediaType);
        Assert.Equal($"job-{Guid.Parse(id):N}-outputs.zip", zip.Content.Headers.ContentDisposition?.FileName?.Trim('"'));
        Assert.Equal(listed, OutputArchives.ZipEntries(await zip.Content.ReadAsByteArrayAsync()));

        var tar = await f.Client.GetAsync($"/api/v1/jobs/{id}/outputs.tar.gz");
        Assert.Equal(HttpStatusCode.OK, tar.StatusCode);
        Assert.Equal("application/gzip", tar.Content.Headers.ContentType?.MediaType);
        Assert.Equal(listed, OutputArchives.TarGzEntries(await tar.Content.ReadAsByteArrayAsync()));
    }

    [Fact]
    public async Task OutputArchives_Get409_WhileTheJobRuns_And404_ForAnUnknownJob()
    {
        var id = await f.Api.SubmitIdAsync(new { image = f.Busybox, command = new[] { "sleep", "60" }, stopGraceSeconds = 0 });
        var early = await f.Client.GetAsync($"/api/v1/jobs/{id}/outputs.zip");
        Assert.Equal(HttpStatusCode.Conflict, early.StatusCode);
        Assert.Contains("once it ends", JsonDocument.Parse(await early.Content.ReadAsStringAsync()).RootElement.GetProperty("detail").GetString());
        await f.Api.CancelAsync(id);
        Assert.Equal(HttpStatusCode.NotFound, (await f.Client.GetAsync($"/api/v1/jobs/{Guid.NewGuid()}/outputs.tar.gz")).StatusCode);

        // A job that ended with nothing in /outputs gives an empty, valid archive.
        await f.Api.WaitForFinalAsync(id);
        Assert.Empty(OutputArchives.ZipEntries(await f.Client.GetByteArrayAsync($"/api/v1/jobs/{id}/outputs.zip")));
        Assert.Empty(OutputArchives.TarGzEntries(await f.Client.GetByteArrayAsync($"/api/v1/jobs/{id}/outputs.tar.gz")));
    }
}
