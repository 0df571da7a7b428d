using System.Net;
using System.Net.Http.Headers;

namespace BatchRunner.Server.Tests;

/// <summary>
/// Output files are opened by the kernel beneath the job's outputs directory without following any link
/// (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS), not by path after a check: what is planted there after the job's
/// outputs were listed is refused, and ranges still work on what is served.
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class OutputServingFacts(ServerFixture f) : IDisposable
{
    private readonly string _outside = Directory.CreateTempSubdirectory("br-outside-").FullName;

    public void Dispose() => Directory.Delete(_outside, recursive: true);

    [Fact]
    public async Task GetOutput_ServesRanges_ButRefusesLinksPlantedAfterTheListing()
    {
        var id = await f.Api.SubmitIdAsync(new
        {
            image = f.Busybox,
            command = new[] { "/bin/sh", "-c", "printf 0123456789 > /outputs/a.txt; mkdir /outputs/d; echo inner > /outputs/d/f.txt; echo kept > /outputs/k.txt" },
        });
        Assert.Equal("succeeded", BatchRunner.Testing.BatchRunnerClient.State(await f.Api.WaitForFinalAsync(id)));
        using (var ranged = new HttpRequestMessage(HttpMethod.Get, $"/api/v1/jobs/{id}/outputs/a.txt"))
        {
            ranged.Headers.Range = new RangeHeaderValue(2, 5);
            var r = await f.Client.SendAsync(ranged);
            Assert.Equal(HttpStatusCode.PartialContent, r.StatusCode);
            Assert.Equal("2345", await r.Content.ReadAsStringAsync());
            Assert.Equal("bytes 2-5/10", r.Content.Headers.ContentRange!.ToString());
        }

        // What a process left behind by the job (or anyone with access to the node) could do after the listing.
        var outputs = Path.Combine(f.DataDir, "jobs", Guid.Parse(id).ToString("N"), "outputs");
        File.WriteAllText(Path.Combine(_outside, "a.txt"), "host secret");
        Directory.CreateDirectory(Path.Combine(_outside, "d"));
        File.WriteAllText(Path.Combine(_outside, "d", "f.txt"), "host secret");
        File.Delete(Path.Combine(outputs, "a.txt"));
        File.CreateSymbolicLink(Path.Combine(outputs, "a.txt"), Path.Combine(_outside, "a.txt"));
        Directory.Delete(Path.Combine(outputs, "d"), recursive: true);
        Directory.CreateSymbolicLink(Path.Combine(outputs, "d"), Path.Combine(_outside, "d"));

        foreach (var path in new[] { "a.txt", "d/f.txt" })
        {
            var r = await f.Client.GetAsync($"/api/v1/jobs/{id}/outputs/{path}");
            var body = await r.Content.ReadAsStringAsync();
            Assert.Equal(HttpStatusCode.NotFound, r.StatusCode);
            Assert.DoesNotContain("host secret", body);
            Assert.Contains("no longer on node", body);
        }
        Assert.Equal("kept\n", await f.Api.OutputAsync(id, "k.txt"));
    }
}
