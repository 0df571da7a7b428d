using System.Text.Json;
using BatchRunner.Server.Tests.Service;

namespace BatchRunner.Server.Tests;

/// <summary>
/// The README's multipart example, sent with curl itself: the spec read from a file
/// (<c>-F 'spec=&lt;spec.json;type=application/json'</c>) survives a <c>;</c>, which the inline form loses.
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class MultipartCurlFacts(ServerFixture f) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("br-curl-").FullName;

    [Fact]
    public async Task CurlWithTheSpecFromAFile_SubmitsASpecContainingSemicolons_WhereTheInlineFormIsCut()
    {
        var spec = JsonSerializer.Serialize(new { image = f.Busybox, command = new[] { "sh", "-c", "cd /inputs; cat hello.txt" } });
        File.WriteAllText(Path.Combine(_dir, "spec.json"), spec);
        File.WriteAllText(Path.Combine(_dir, "hello.txt"), "hello through curl\n");

        var fromFile = await CurlAsync("-F", "spec=<spec.json;type=application/json", "-F", "file=@hello.txt");
        Assert.True(fromFile.Code == "201", fromFile.Body);
        var id = JsonDocument.Parse(fromFile.Body).RootElement.GetProperty("id").GetString()!;
        var done = await f.Api.WaitForFinalAsync(id);
        Assert.Equal("succeeded", done.GetProperty("state").GetString());
        Assert.Equal("hello through curl\n", await f.Client.GetStringAsync($"/api/v1/jobs/{id}/logs"));

        // Written inline, curl cuts the spec at its ';' (the start of ";type="): the server refuses what is left.
        var inline = await CurlAsync("-F", $"spec={spec};type=application/json", "-F", "file=@hello.txt");
        Assert.Equal("400", inline.Code);
    }

    private async Task<(string Code, string Body)> CurlAsync(params string[] form)
    {
        var output = Path.Combine(_dir, "body");
        var (exit, stdout, stderr) = await RepoScript.RunAsync("/usr/bin/curl",
        [
            "-sS", "-o", output, "-w", "%{http_code}", "-H", $"Authorization: Bearer {ServerFixture.ApiKey}",
            .. form, new Uri(f.Client.BaseAddress!, "/api/v1/jobs").ToString(),
        ], workingDirectory: _dir);
        Assert.True(exit == 0, stderr);
        return (stdout.Trim(), File.ReadAllText(output));
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);
}
