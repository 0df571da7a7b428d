using System.Net;
using System.Text.Json;
using BatchRunner.Runtime.Disk;
using BatchRunner.Server.Tests.Observability;
using BatchRunner.Testing;
using Microsoft.Extensions.DependencyInjection;

namespace BatchRunner.Server.Tests.Disk;

/// <summary>resources.disk end to end: real loop-mounted ext4 volumes under real runc, through the HTTP API.</summary>
[Collection(ServerCollection.Name)]
public sealed class DiskLimitFacts(ServerFixture f)
{
    private const long MiB = 1L << 20;
    private const long Headroom = DiskImageSizing.DefaultHeadroomBytes;

    private static string State(JsonElement j) => j.GetProperty("state").GetString()!;
    private static string? Reason(JsonElement j) => j.GetProperty("reason").GetString();

    private async Task<JsonElement> RunAsync(string script, string disk = "64Mi") =>
        await f.Api.WaitForFinalAsync(await f.Api.SubmitIdAsync(new
        {
            image = f.Busybox,
            command = new[] { "/bin/sh", "-c", script },
            resources = new { memory = "64Mi", disk },
            timeoutSeconds = 60,
        }));

    [Fact]
    public async Task Job_EndsDiskQuotaExceeded_AndTheHostHoldsNoMoreThanItsDisk_WhenItWritesTwiceItsDiskToOutputs()
    {
        var done = await RunAsync("dd if=/dev/zero of=/outputs/big bs=1M count=128");

        Assert.Equal(("failed", "disk_quota_exceeded"), (State(done), Reason(done)));
        Assert.StartsWith("disk limit 64Mi exceeded: the job's files reached ", done.GetProperty("message").GetString());
        Assert.Equal("64Mi", done.GetProperty("resources").GetProperty("disk").GetString());
        Assert.Equal(64 * MiB, done.GetProperty("resources").GetProperty("diskBytes").GetInt64());
        Assert.InRange(done.GetProperty("usage").GetProperty("diskBytes").GetInt64(), 64 * MiB + 1, 64 * MiB + Headroom);
        // What it wrote up to the limit (and its headroom) is kept and served, and is all the host holds of it.
        var big = Assert.Single(done.GetProperty("outputs").EnumerateArray());
        Assert.InRange(big.GetProperty("size").GetInt64(), 64 * MiB, 64 * MiB + Headroom);
        var onHost = new FileInfo(Path.Combine(f.DataDir, "jobs", done.GetProperty("id").GetString()!.Replace("-", ""), "outputs", "big"));
        Assert.Equal(big.GetProperty("size").GetInt64(), onHost.Length);
    }

    [Fact]
    public async Task Job_EndsDiskQuotaExceeded_WhenItFillsItsOwnRootFilesystem()
    {
        var done = await RunAsync("dd if=/dev/zero of=/big bs=1M count=128; echo wrote");

        Assert.Equal(("failed", "disk_quota_exceeded"), (State(done), Reason(done)));
        Assert.Empty(done.GetProperty("outputs").EnumerateArray());
    }

    [Fact]
    public async Task Job_EndsDiskQuotaExceeded_WhenItFillsItsEtcHosts_WhichIsOnItsDiskNotTheHosts()
    {
        // /etc/hosts, /etc/hostname and /etc/resolv.conf are writable per-container copies bound into the container: they
        // are on the job's disk (they were in the bundle, on the data directory's filesystem, outside any limit).
        var done = await RunAsync("dd if=/dev/zero of=/etc/hosts bs=1M count=128 2>/dev/null; echo wrote $(wc -c </etc/hosts)");

        Assert.Equal(("failed", "disk_quota_exceeded"), (State(done), Reason(done)));
        var wrote = long.Parse((await f.Api.LogsAsync(done.GetProperty("id").GetString()!, "stdout")).Trim().Split(' ')[1]);
        Assert.InRange(wrote, 1, 64 * MiB + Headroom);
    }

    [Fact]
    public async Task Job_EndsDiskQuotaExceeded_EvenWhenItsProcessCatchesEnospcAndExitsZero()
    {
        var done = await RunAsync("dd if=/dev/zero of=/outputs/big bs=1M count=128 2>/outputs/dd.err || echo caught; exit 0");

        Assert.Equal(("failed", "disk_quota_exceeded"), (State(done), Reason(done)));
        Assert.Equal(0, done.GetProperty("exitCode").GetInt32());
        Assert.EndsWith("; exit code 0", done.GetProperty("message").GetString());
        var id = done.GetProperty("id").GetString()!;
        Assert.Contains("No space left on device", await f.Api.OutputAsync(id, "dd.err"));
        Assert.Equal("caught\n", await f.Api.LogsAsync(id, "stdout"));
    }

    [Fact]
    public async Task Job_EndsDiskQuotaExceeded_WhenItDeletesWhatFilledItsDiskBeforeExitingZero()
    {
        // The disk is empty again by the end: only the sampling while it ran (faster as the disk fills) can tell. The job
        // stays over its limit for half a second before it deletes: freeing the space within milliseconds of ENOSPC is
        // what DiskUsageWatch says it can miss when its sampler is starved of CPU, as in a full test run on 2 cores
        // (the clean-clone run at cf24198 missed it once; 3 runs of this class alone did not).
        var done = await RunAsync("dd if=/dev/zero of=/outputs/big bs=1M count=128 2>/dev/null; sleep 0.5; rm -f /outputs/big; exit 0");

        Assert.Equal(("failed", "disk_quota_exceeded"), (State(done), Reason(done)));
        Assert.Empty(done.GetProperty("outputs").EnumerateArray());
    }

    [Fact]
    public async Task Job_Succeeds_WithItsDiskUsage_WhenItStaysWithinItsDisk()
    {
        var done = await RunAsync("dd if=/dev/zero of=/outputs/f bs=1M count=40 && dd if=/dev/zero of=/in-root bs=1M count=20");

        Assert.Equal("succeeded", State(done));
        Assert.InRange(done.GetProperty("usage").GetProperty("diskBytes").GetInt64(), 60 * MiB, 61 * MiB);
        Assert.Equal("exited with code 0", done.GetProperty("message").GetString());
    }

    [Fact]
    public async Task Outputs_LoseSetuidBitsAndKeepNoFifo_AndTheMessageSaysSo()
    {
        var done = await RunAsync("echo '#!/bin/sh' > /outputs/tool; chmod 4755 /outputs/tool; mkdir /outputs/d; chmod 2775 /outputs/d; " +
                                  "mkfifo /outputs/pipe; echo ok > /outputs/d/result");

        Assert.Equal("succeeded", State(done));
        Assert.Equal("exited with code 0; outputs: setuid/setgid bits removed from d, tool; not kept (only regular files and directories are): pipe (FIFO)",
            done.GetProperty("message").GetString());
        var outputs = Path.Combine(f.DataDir, "jobs", done.GetProperty("id").GetString()!.Replace("-", ""), "outputs");
        Assert.Equal((UnixFileMode)0b111_101_101, File.GetUnixFileMode(Path.Combine(outputs, "tool")));
        Assert.Equal((UnixFileMode)0b111_111_101, File.GetUnixFileMode(Path.Combine(outputs, "d")));
        Assert.False(File.Exists(Path.Combine(outputs, "pipe")));
        Assert.Equal(["d/result", "tool"], done.GetProperty("outputs").EnumerateArray().Select(o => o.GetProperty("path").GetString()));
        Assert.Equal("ok\n", await f.Api.OutputAsync(done.GetProperty("id").GetString()!, "d/result"));
    }

    [Fact]
    public async Task DiskUsage_IsExportedWhileTheJobRuns()
    {
        var id = await f.Api.SubmitIdAsync(new
        {
            image = f.Busybox,
            command = new[] { "/bin/sh", "-c", "dd if=/dev/zero of=/outputs/f bs=1M count=6; sleep 30" },
            resources = new { disk = "48Mi" },
        });
        try
        {
            var m = await Poll.UntilAsync(() => MetricsText.ScrapeAsync(f.Anonymous),
                m => m.Where("container_fs_usage_bytes", ("job_id", id)).Any(s => s.Value >= 6 * MiB), TimeSpan.FromSeconds(30), "disk usage series", 100);
            Assert.Equal(48.0 * MiB, m.Where("container_fs_limit_bytes", ("job_id", id)).Single().Value);
            Assert.True(m.Where("batchrunner_node_allocated_disk_bytes").Sum(s => s.Value) >= 48 * MiB);
            // This server's node only: another in-process server (SmallDiskFixture's) may publish its own beside it.
            var node = ("node", f.App.Services.GetRequiredService<BatchRunner.Server.Nodes.NodeIdentity>().Name);
            Assert.True(m.Where("batchrunner_node_capacity_disk_bytes", node).Single().Value > 0);
            Assert.True(m.Where("batchrunner_node_disk_free_bytes", node).Single().Value > 0);
            Assert.Equal(0, m.Where("batchrunner_node_disk_pressure", node).Single().Value);
        }
        finally
        {
            await f.Api.CancelAsync(id);
            await f.Api.WaitForFinalAsync(id);
        }
    }

    [Fact]
    public async Task Submit_Is400NamingResourcesDisk_WhenNoNodeCouldEverHoldTheJobsDisk()
    {
        var response = await f.Api.PostJobAsync(new { image = f.Busybox, command = new[] { "true" }, resources = new { disk = "900Pi" } });

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var errors = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.GetProperty("errors");
        var message = Assert.Single(errors.GetProperty("resources.disk").EnumerateArray()).GetString();
        Assert.StartsWith("900Pi disk requested; the largest live node has ", message);
    }

    [Fact]
    public async Task Submit_GivesTheNodesDefaultDisk_WhenTheJobNamesNone()
    {
        var job = await f.Api.SubmitAsync(new { image = f.Busybox, command = new[] { "true" } });

        Assert.Equal("10Gi", job.GetProperty("resources").GetProperty("disk").GetString());
        await f.Api.WaitForFinalAsync(job.GetProperty("id").GetString()!);
    }

    [Fact]
    public async Task NodesAndHealthz_ShowTheDataDirectorysSpaceAndReserve()
    {
        var node = (await f.Api.NodesAsync()).EnumerateArray().Single();
        var health = JsonDocument.Parse(await f.Anonymous.GetStringAsync("/healthz")).RootElement;

        Assert.True(node.GetProperty("capacity").GetProperty("diskBytes").GetInt64() > 0);
        var disk = node.GetProperty("disk");
        Assert.True(disk.GetProperty("freeBytes").GetInt64() > 0);
        Assert.True(disk.GetProperty("reserveBytes").GetInt64() >= 2L << 30);
        Assert.Equal(JsonValueKind.Null, disk.GetProperty("pressure").ValueKind);
        Assert.Equal("ok", health.GetProperty("disk").GetProperty("status").GetString());
        Assert.Equal("enforced", health.GetProperty("disk").GetProperty("jobLimits").GetString());
    }
}
