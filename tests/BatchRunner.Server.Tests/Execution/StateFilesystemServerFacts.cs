using System.Text.Json.Nodes;
using BatchRunner.Runtime;
using BatchRunner.Server.Nodes;
using BatchRunner.Testing;

namespace BatchRunner.Server.Tests.Execution;

/// <summary>The node's state tmpfs (DATA/state) over a real BatchRunner process's life: mounted at start, gone after a
/// clean stop. (After a kill -9 it stays, and the restarted node's janitor finds its containers there:
/// <c>ClusterFacts.KilledWorker_…</c>.)</summary>
[Collection(ServerCollection.Name)]
public sealed class StateFilesystemServerFacts(ServerFixture f)
{
    [Fact]
    public async Task StateTmpfs_IsMountedWhileTheNodeRuns_AndUnmountedAfterACleanStop()
    {
        await using var server = await ServerProcess.StartAsync("statefs", ["--BatchRunner:Workers=1", .. TestRegistry.ServerArgs]);
        var state = Path.Combine(server.DataDir, "state");
        Assert.Equal("tmpfs", StateFilesystem.FilesystemTypeAt(state));
        Assert.Equal("hi\n", await server.Api.RunAsync(new { image = f.Busybox, command = new[] { "echo", "hi" } }));

        await server.StopAsync();

        Assert.Null(StateFilesystem.FilesystemTypeAt(state));
        Assert.Empty(Directory.EnumerateFileSystemEntries(state));
        Assert.False(Directory.Exists(Path.Combine(server.DataDir, "runtime")));
    }

    [Fact]
    public async Task AContainerLeftInTheOldStateRoot_IsRemovedAtStart_AndTheOldRootWithIt()
    {
        // What a node of a version before the state tmpfs left when it was killed: a running container in DATA/runtime.
        var dataDir = Path.Combine("/tmp", "br-legacy-" + Guid.NewGuid().ToString("N")[..8]);
        var nodeName = "legacy-" + Guid.NewGuid().ToString("N")[..6];
        var legacy = Path.Combine(dataDir, "runtime");
        var id = NodeIdentity.For(nodeName, dataDir).ContainerPrefix + Guid.NewGuid().ToString("N") + "-1";
        var bundle = Path.Combine(dataDir, "old-bundle");
        Directory.CreateDirectory(Path.Combine(bundle, "rootfs", "bin"));
        File.Copy("/bin/busybox", Path.Combine(bundle, "rootfs", "bin", "busybox"));
        await ExternalCommand.RunAsync("runc", ["spec", "--bundle", bundle]);
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(bundle, "config.json")))!;
        config["process"]!["terminal"] = false;
        config["process"]!["args"] = new JsonArray("/bin/busybox", "sleep", "600");
        File.WriteAllText(Path.Combine(bundle, "config.json"), config.ToJsonString());
        // The container keeps the stdio it is given: not this test's pipes.
        await ExternalCommand.RunAsync("sh", ["-c", $"exec runc --root '{legacy}' run --detach --bundle '{bundle}' {id} </dev/null >/dev/null 2>&1"]);
        try
        {
            var pid = JsonNode.Parse(await ExternalCommand.RunAsync("runc", ["--root", legacy, "state", id]))!["pid"]!.GetValue<int>();
            Assert.True(Directory.Exists($"/proc/{pid}"));

            await using var server = await ServerProcess.StartAsync("legacy", ["--BatchRunner:Workers=1", .. TestRegistry.ServerArgs],
                dataDir: dataDir, nodeName: nodeName);

            Assert.False(Directory.Exists(legacy));
            // Killed: gone, or a zombie until whoever adopted it (this test process may be a subreaper) reaps it.
            Assert.True(!File.Exists($"/proc/{pid}/stat") || File.ReadAllText($"/proc/{pid}/stat").Split(") ")[1].StartsWith('Z'),
                "the old container's process was killed");
            Assert.Contains(server.Lines, l => l.Contains("Removed leftovers of a previous run: 1 containers"));
        }
        finally
        {
            if (Directory.Exists(legacy)) await ExternalCommand.RunAsync("runc", ["--root", legacy, "delete", "--force", id]);
        }
    }
}
