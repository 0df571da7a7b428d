using System.Text;
using System.Text.Json;
using BatchRunner.Testing;

namespace BatchRunner.Server.Tests;

/// <summary>
/// No host user but root can use a job's files: inputs, logs and outputs, and the image layers its rootfs came from,
/// checked as the nobody user against a real server whose embedded PostgreSQL (user postgres) still reaches its
/// directory through the data directory.
/// </summary>
[Collection(ServerCollection.Name)]
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class HostFileAccessFacts(ServerFixture f)
{
    [Fact]
    public async Task JobFiles_AreUnreadableByNobody_WhileTheEmbeddedPostgresStillWorks()
    {
        using var form = new MultipartFormDataContent
        {
            { new StringContent(JsonSerializer.Serialize(new
            {
                image = f.Busybox,
                command = new[] { "/bin/sh", "-c", "cat /inputs/in.txt; mkdir /outputs/d; echo out > /outputs/d/o.txt; chmod 0777 /outputs/d; chmod 0666 /outputs/d/o.txt" },
            }, BatchRunnerClient.Json), Encoding.UTF8, "application/json"), "spec" },
            { new ByteArrayContent("secret input\n"u8.ToArray()), "file", "in.txt" },
        };
        var id = BatchRunnerClient.Id(await BatchRunnerClient.CreatedAsync(await f.Client.PostAsync("/api/v1/jobs", form)));
        Assert.Equal("secret input\n", await f.Api.SucceededStdoutAsync(id));

        var jobDir = Path.Combine(f.DataDir, "jobs", Guid.Parse(id).ToString("N"));
        var layers = Path.Combine(f.DataDir, "images", "layers", "sha256");
        var paths = new List<string> { f.DataDir };
        paths.AddRange(Directory.EnumerateFileSystemEntries(f.DataDir));
        paths.Add(jobDir);
        paths.AddRange(HostUserProbe.Tree(jobDir));
        paths.AddRange(Directory.EnumerateDirectories(layers).SelectMany(l => new[] { l, Path.Combine(l, "bin", "busybox"), Path.Combine(l, "etc", "passwd") }));
        // What the job made world-readable, and what it had as input, are all there for the probe to try.
        Assert.Contains(Path.Combine(jobDir, "inputs", "in.txt"), paths);
        Assert.Contains(Path.Combine(jobDir, "outputs", "d", "o.txt"), paths);
        Assert.Contains(Path.Combine(jobDir, "stdout.log"), paths);

        Assert.Empty(await HostUserProbe.ReadableByNobodyAsync(paths));
        // 0710 to the postgres group: the cluster searched its way to DATA/postgres and answers (this test's job was stored).
        var postgresGid = (await ExternalCommand.RunAsync("id", ["-g", "postgres"])).Trim();
        Assert.Equal($"710 0:{postgresGid}", (await ExternalCommand.RunAsync("stat", ["-c", "%a %u:%g", f.DataDir])).Trim());
        Assert.Equal("postgres 700", (await ExternalCommand.RunAsync("stat", ["-c", "%U %a", Path.Combine(f.DataDir, "postgres")])).Trim());
    }
}
