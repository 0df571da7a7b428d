using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;
using BatchRunner.Server.Hosting;
using BatchRunner.Server.Tests.Observability;
using BatchRunner.Testing;
using Microsoft.AspNetCore.Builder;

namespace BatchRunner.Server.Tests.Disk;

/// <summary>
/// A BatchRunner whose data directory is a small filesystem of its own (a 1 GiB ext4 image loop-mounted in the test's
/// directory), embedded PostgreSQL included, with a reserve (MinFreeDisk) of 300 MiB: what happens when the disk
/// fills up, for real.
/// </summary>
public sealed class SmallDiskFixture : IAsyncLifetime
{
    public const string ApiKey = "small-disk-key";
    public const long ReserveBytes = 300L << 20;
    public const string NodeName = "small-disk";

    public string Root { get; } = Path.Combine("/tmp", "br-small-disk-" + Guid.NewGuid().ToString("N")[..8]);
    public string DataDir => Path.Combine(Root, "data");
    public WebApplication App { get; private set; } = null!;
    public BatchRunnerClient Api { get; private set; } = null!;
    public TestRegistry Registry { get; private set; } = null!;
    public string Busybox { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        Directory.CreateDirectory(DataDir);
        var image = Path.Combine(Root, "data.img");
        await using (var f = File.Create(image)) f.SetLength(1L << 30);
        await ExternalCommand.RunAsync("mkfs.ext4", ["-q", "-F", "-m", "0", image]);
        await ExternalCommand.RunAsync("mount", ["-o", "loop", image, DataDir]);
        Registry = await TestRegistry.StartAsync();
        Busybox = await TestImages.PushBusyboxAsync(Registry);
        App = await BatchRunnerApp.BuildAsync([
            "--urls", "http://127.0.0.1:0",
            $"--BatchRunner:DataDir={DataDir}",
            $"--BatchRunner:ApiKey={ApiKey}",
            "--BatchRunner:Workers=2",
            "--BatchRunner:HeartbeatSeconds=1",
            // Its own name: the ServerFixture's in-process server (the machine's name) publishes the same series.
            $"--BatchRunner:NodeName={NodeName}",
            $"--BatchRunner:MinFreeDisk={ReserveBytes}",
            "--BatchRunner:Disk:Default=64Mi",
            "--Logging:LogLevel:Default=Warning",
            .. TestRegistry.ServerArgs,
        ]);
        (Api, _) = await InProcessHost.StartAsync(App, ApiKey);
    }

    /// <summary>Takes the data directory's free space down to <paramref name="freeBytes"/> with a file of the test's.</summary>
    public void FillTo(long freeBytes)
    {
        var filler = Path.Combine(DataDir, "filler");
        var free = BatchRunner.Runtime.Disk.HostDisk.Read(DataDir).AvailableBytes + (File.Exists(filler) ? new FileInfo(filler).Length : 0);
        File.Delete(filler);
        // fallocate: the blocks are taken at once, as if written.
        ExternalCommand.RunAsync("fallocate", ["-l", (free - freeBytes).ToString(System.Globalization.CultureInfo.InvariantCulture), filler]).GetAwaiter().GetResult();
    }

    public void Unfill() => File.Delete(Path.Combine(DataDir, "filler"));

    public async Task DisposeAsync()
    {
        Api?.Dispose();
        await InProcessHost.StopAsync(App);
        if (Registry is not null) await Registry.DisposeAsync();
        for (var i = 0; i < 10 && File.ReadLines("/proc/self/mountinfo").Any(l => l.Split(' ')[4] == DataDir); i++)
            await ExternalCommand.RunAsync("umount", [DataDir]);
        Directory.Delete(Root, recursive: true);
    }
}

/// <summary>The free-space reserve on a real small filesystem: jobs wait below it, the database stays writable, pulls are refused.</summary>
public sealed class DiskReserveFacts(SmallDiskFixture f) : IClassFixture<SmallDiskFixture>
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60);

    private async Task<JsonElement> HealthAsync() => JsonDocument.Parse(await f.Api.Http.GetStringAsync("/healthz")).RootElement.Clone();

    [Fact]
    public async Task Submit_Is400NamingResourcesDisk_WhenTheJobsDiskIsLargerThanTheDataFilesystemLessItsReserve()
    {
        var response = await f.Api.PostJobAsync(new { image = f.Busybox, command = new[] { "true" }, resources = new { disk = "1Gi" } });

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var body = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
        Assert.StartsWith("1Gi disk requested; the largest live node has ",
            body.GetProperty("errors").GetProperty("resources.disk")[0].GetString());
    }

    [Fact]
    public async Task BelowTheReserve_NewJobsWait_HealthzSaysWhy_PostgresAcceptsWrites_AndPullsAreRefused()
    {
        f.FillTo(SmallDiskFixture.ReserveBytes - (50L << 20));
        try
        {
            var health = await HealthAsync();
            Assert.Equal("ok", health.GetProperty("status").GetString());
            Assert.Equal("below_reserve", health.GetProperty("disk").GetProperty("status").GetString());
            Assert.Contains("below the reserve MinFreeDisk=300Mi: no new jobs start", health.GetProperty("disk").GetProperty("pressure").GetString());

            // Accepted and stored: the database writes while the data directory is below its reserve.
            var id = await f.Api.SubmitIdAsync(new { image = f.Busybox, command = new[] { "/bin/sh", "-c", "echo ran" } });
            var node = await Poll.UntilAsync(async () => (await f.Api.NodesAsync()).EnumerateArray().Single(),
                n => n.GetProperty("disk").GetProperty("pressure").ValueKind == JsonValueKind.String, Deadline, "node record with the pressure", 100);
            Assert.Contains("no new jobs start", node.GetProperty("disk").GetProperty("pressure").GetString());
            var metrics = await MetricsText.ScrapeAsync(f.Api.Http);
            Assert.Equal(1, metrics.Where("batchrunner_node_disk_pressure", ("node", SmallDiskFixture.NodeName)).Single().Value);
            // Waits: still queued after a few admission rounds (each bounces it back to the queue).
            await Task.Delay(TimeSpan.FromSeconds(3));
            Assert.Equal("queued", (await f.Api.GetJobAsync(id)).GetProperty("state").GetString());
            var other = await f.Api.SubmitIdAsync(new { image = f.Busybox, command = new[] { "true" } });
            Assert.Equal(HttpStatusCode.Accepted, (await f.Api.CancelAsync(other)).StatusCode);
            Assert.Equal("cancelled", (await f.Api.WaitForFinalAsync(other)).GetProperty("state").GetString());

            var import = await ImportAsync("reserve/tool:busybox");
            Assert.Equal(HttpStatusCode.BadRequest, import.StatusCode);
            var problem = await import.Content.ReadAsStringAsync();
            Assert.True(problem.Contains("not enough disk space"), problem);

            f.Unfill();
            Assert.Equal("ran\n", await f.Api.SucceededStdoutAsync(id));
            Assert.Equal("ok", (await HealthAsync()).GetProperty("disk").GetProperty("status").GetString());
        }
        finally
        {
            f.Unfill();
        }
    }

    [Fact]
    public async Task AJobFillingItsDisk_CannotTakeTheDatabaseDown()
    {
        var free = BatchRunner.Runtime.Disk.HostDisk.Read(f.DataDir).AvailableBytes;
        // Nearly all the node grants now, written past its end: the job's disk stops it, the reserve stays free.
        var disk = (free - SmallDiskFixture.ReserveBytes - (150L << 20)) >> 20;
        var done = await f.Api.WaitForFinalAsync(await f.Api.SubmitIdAsync(new
        {
            image = f.Busybox,
            command = new[] { "/bin/sh", "-c", "dd if=/dev/zero of=/outputs/big bs=1M count=2000" },
            resources = new { disk = $"{disk}Mi" },
        }), Deadline);

        Assert.True(done.GetProperty("reason").GetString() == "disk_quota_exceeded", done.ToString());
        // Its outputs are kept in the data directory, which still has its reserve, and the database takes writes.
        Assert.True(BatchRunner.Runtime.Disk.HostDisk.Read(f.DataDir).AvailableBytes > SmallDiskFixture.ReserveBytes);
        Assert.Equal("ok", (await HealthAsync()).GetProperty("database").GetString());
        Assert.Equal("after\n", await f.Api.RunAsync(new { image = f.Busybox, command = new[] { "/bin/sh", "-c", "echo after" } }));
    }

    private async Task<HttpResponseMessage> ImportAsync(string name)
    {
        var tar = await ImagesApiFacts.TarLayoutAsync();
        try
        {
            await using var body = File.OpenRead(tar);
            using var content = new StreamContent(body);
            content.Headers.ContentType = new MediaTypeHeaderValue("application/x-tar");
            return await f.Api.Http.PostAsync($"/api/v1/images?name={name}", content);
        }
        finally { File.Delete(tar); }
    }
}
