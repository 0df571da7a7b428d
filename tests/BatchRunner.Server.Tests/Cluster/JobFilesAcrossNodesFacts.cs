using System.Formats.Tar;
using System.IO.Compression;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using BatchRunner.Testing;

namespace BatchRunner.Server.Tests.Cluster;

/// <summary>
/// A job's files between nodes, with an API node and a worker in separate data directories (separate processes
/// sharing one PostgreSQL): multipart inputs taken by the API reach the worker; the worker's own policy (not the
/// API node's settings) decides which network modes and datasets a job may ask for; DELETE removes the files on
/// both nodes, and a node that was down when its job was deleted removes them when it comes back.
/// </summary>
[Collection(ClusterCollection.Name)]
public sealed class JobFilesAcrossNodesFacts
{
    private static string State(JsonElement job) => job.GetProperty("state").GetString()!;

    [Fact]
    public async Task InputsPolicyAndDeletion_FollowTheJob_AcrossNodes()
    {
        await using var c = await TestCluster.StartAsync();
        var dataset = Directory.CreateDirectory(Path.Combine(c.Root, "dataset")).FullName;
        File.WriteAllText(Path.Combine(dataset, "data.txt"), "dataset bytes\n");
        // The API node keeps the defaults (network none and bridge, no datasets); only the worker allows host and has "shared".
        var api = await c.StartNodeAsync("api", role: "api");
        var w1 = await c.StartNodeAsync("w1", extra:
        [
            "--BatchRunner:Isolation:AllowedNetworkModes:0=none",
            "--BatchRunner:Isolation:AllowedNetworkModes:1=host",
            $"--BatchRunner:Isolation:Datasets:shared={dataset}",
        ]);

        var binary = RandomNumberGenerator.GetBytes(200_000);
        var id = await SubmitWithInputsAsync(c, binary, new
        {
            image = c.Busybox,
            network = "host",
            volumes = new[] { new { dataset = "shared", path = "/data" } },
            command = new[] { "/bin/sh", "-c", "cd /inputs && find . | sort && sha256sum a.txt b.bin dir/x.txt && cat a.txt dir/x.txt /data/data.txt" },
        });
        var done = await c.WaitFinalAsync(id);
        var stdout = await c.Api.LogsAsync(id, "stdout");
        Assert.True(State(done) == "succeeded", $"{done}\n{stdout}\n{await c.Api.LogsAsync(id, "stderr")}");
        Assert.Equal("w1", done.GetProperty("node").GetString());
        Assert.Equal(
            ".\n./a.txt\n./b.bin\n./dir\n./dir/link\n./dir/x.txt\n" +
            $"{Hex("alpha\n"u8)}  a.txt\n{Hex(binary)}  b.bin\n{Hex("from the archive\n"u8)}  dir/x.txt\n" +
            "alpha\nfrom the archive\ndataset bytes\n", stdout);
        var jobDir = Guid.Parse(id).ToString("N");
        var tars = Directory.GetFiles(Path.Combine(api.DataDir, "inputs", "sha256"));
        Assert.Single(tars);
        Assert.False(Directory.Exists(Path.Combine(api.DataDir, "jobs", jobDir)));
        Assert.True(File.Exists(Path.Combine(w1.DataDir, "jobs", jobDir, "inputs", "b.bin")));

        // Each worker publishes what it allows with its node record.
        var policy = (await c.Api.NodesAsync()).EnumerateArray().Single(n => n.GetProperty("name").GetString() == "w1").GetProperty("policy");
        Assert.Equal(["none", "host"], policy.GetProperty("networkModes").EnumerateArray().Select(m => m.GetString()));
        Assert.Equal(["shared"], policy.GetProperty("datasets").EnumerateArray().Select(m => m.GetString()));

        // What no live node allows is refused at submission, naming the field.
        Assert.Equal("network mode \"bridge\" is not allowed on any live node; allowed: host, none",
            await FieldErrorAsync(await c.Api.PostJobAsync(new { image = c.Busybox, network = "bridge" }), "network"));
        Assert.StartsWith("unknown dataset \"imagenet\": no live node has it; they have shared",
            await FieldErrorAsync(await c.Api.PostJobAsync(new { image = c.Busybox, volumes = new[] { new { dataset = "imagenet", path = "/data" } } }), "volumes[0].dataset"));

        // DELETE on the API node: its inputs tar and the worker's job directory go, at once.
        Assert.Equal(HttpStatusCode.NoContent, (await c.Api.Http.DeleteAsync($"/api/v1/jobs/{id}")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await c.Api.Http.GetAsync($"/api/v1/jobs/{id}")).StatusCode);
        Assert.Empty(Directory.GetFiles(Path.Combine(api.DataDir, "inputs", "sha256")));
        Assert.False(Directory.Exists(Path.Combine(w1.DataDir, "jobs", jobDir)));

        // A job deleted while its node is down: the record goes at once, the files when the node is back.
        var later = await c.Api.SubmitIdAsync(new { image = c.Busybox, command = new[] { "/bin/sh", "-c", "echo kept > /outputs/k.txt" } });
        Assert.Equal("succeeded", State(await c.WaitFinalAsync(later)));
        var laterDir = Path.Combine(w1.DataDir, "jobs", Guid.Parse(later).ToString("N"));
        Assert.True(File.Exists(Path.Combine(laterDir, "outputs", "k.txt")));
        w1.Kill();
        await w1.WaitForExitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(HttpStatusCode.NoContent, (await c.Api.Http.DeleteAsync($"/api/v1/jobs/{later}")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await c.Api.Http.GetAsync($"/api/v1/jobs/{later}")).StatusCode);
        Assert.True(Directory.Exists(laterDir));
        await w1.StartAsync();
        await Poll.UntilAsync(() => !Directory.Exists(laterDir), TimeSpan.FromSeconds(30), "w1 to remove the deleted job's files after its restart");
    }

    /// <summary>Multipart: the spec, a.txt, b.bin and an archive (tar.gz) holding dir/x.txt and a link dir/link → x.txt.</summary>
    private static async Task<string> SubmitWithInputsAsync(TestCluster c, byte[] binary, object spec)
    {
        var archive = new MemoryStream();
        await using (var gz = new GZipStream(archive, CompressionLevel.Fastest, leaveOpen: true))
        await using (var tar = new TarWriter(gz, TarEntryFormat.Pax, leaveOpen: true))
        {
            await tar.WriteEntryAsync(new PaxTarEntry(TarEntryType.Directory, "dir/"));
            await tar.WriteEntryAsync(new PaxTarEntry(TarEntryType.RegularFile, "dir/x.txt") { DataStream = new MemoryStream("from the archive\n"u8.ToArray()) });
            await tar.WriteEntryAsync(new PaxTarEntry(TarEntryType.SymbolicLink, "dir/link") { LinkName = "x.txt" });
        }
        using var form = new MultipartFormDataContent
        {
            { new StringContent(JsonSerializer.Serialize(spec, BatchRunnerClient.Json), Encoding.UTF8, "application/json"), "spec" },
            { new ByteArrayContent("alpha\n"u8.ToArray()), "file", "a.txt" },
            { new ByteArrayContent(binary), "file", "b.bin" },
            { new ByteArrayContent(archive.ToArray()), "archive", "inputs.tar.gz" },
        };
        return BatchRunnerClient.Id(await BatchRunnerClient.CreatedAsync(await c.Api.Http.PostAsync("/api/v1/jobs", form)));
    }

    private static async Task<string> FieldErrorAsync(HttpResponseMessage response, string field)
    {
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.BadRequest, body);
        return JsonDocument.Parse(body).RootElement.GetProperty("errors").GetProperty(field)[0].GetString()!;
    }

    private static string Hex(ReadOnlySpan<byte> bytes) => Convert.ToHexStringLower(SHA256.HashData(bytes));
}
