using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using BatchRunner.Testing;

namespace BatchRunner.Server.Tests;

/// <summary>
/// User-namespace remapping end to end: jobs submitted over HTTP to a node with
/// BatchRunner:Isolation:UserNamespace enabled, run by real runc. Container root must be host uid
/// <see cref="UserNamespaceServerFixture.HostIdStart"/>, and outputs, inputs and image users must still work.
/// </summary>
[Collection(UserNamespaceServerCollection.Name)]
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class UserNamespaceApiFacts(UserNamespaceServerFixture f)
{
    private static readonly string Mapping = $"0 {UserNamespaceServerFixture.HostIdStart} {UserNamespaceServerFixture.Size}";
    private static readonly uint Root = UserNamespaceServerFixture.HostIdStart;
    private static readonly uint Nobody = UserNamespaceServerFixture.HostIdStart + 65534;

    private static string[] Lines(string s) => s.Split('\n', StringSplitOptions.RemoveEmptyEntries);
    private static string Words(string line) => string.Join(' ', line.Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries));

    private string JobDir(string id) => Path.Combine(f.DataDir, "jobs", Guid.Parse(id).ToString("N"));

    private static uint HostOwner(string path) =>
        uint.Parse(ExternalCommand.RunAsync("stat", ["-c", "%u", path]).GetAwaiter().GetResult().Trim());

    [Fact]
    public async Task Job_SeesTheNodesIdMapping_AndIsRootInside()
    {
        var id = await f.Api.SubmitIdAsync(new
        {
            image = f.Busybox,
            command = new[] { "/bin/sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map; id -u; id -g; grep '^Uid:' /proc/self/status" },
        });
        var lines = Lines(await f.Api.SucceededStdoutAsync(id));

        Assert.Equal([Mapping, Mapping, "0", "0", "Uid: 0 0 0 0"], lines.Select(Words));
    }

    [Fact]
    public async Task JobProcesses_AreTheMappedUidOnTheHost_WhileRootInside()
    {
        var id = await f.Api.SubmitIdAsync(new { image = f.Busybox, command = new[] { "/bin/sh", "-c", "id -u; exec sleep 60" } });
        try
        {
            await Poll.UntilAsync(() => f.Api.LogsAsync(id, "stdout"), s => s.Contains('\n'), TimeSpan.FromSeconds(60), $"job {id} to print its uid");
            Assert.Equal("0\n", await f.Api.LogsAsync(id, "stdout"));
            var pids = f.HostPidsOf(id);
            Assert.NotEmpty(pids);
            foreach (var pid in pids)
            {
                var status = File.ReadAllLines($"/proc/{pid}/status");
                // real, effective, saved and filesystem ids: all the mapped root, none host root.
                Assert.Equal($"Uid: {Root} {Root} {Root} {Root}", Words(status.Single(l => l.StartsWith("Uid:"))));
                Assert.Equal($"Gid: {Root} {Root} {Root} {Root}", Words(status.Single(l => l.StartsWith("Gid:"))));
            }
        }
        finally
        {
            await f.Client.PostAsync($"/api/v1/jobs/{id}/cancel", null);
            Assert.Equal("cancelled", (await f.Api.WaitForFinalAsync(id)).GetProperty("state").GetString());
        }
    }

    [Fact]
    public async Task RootInside_EvenWithDacOverride_CannotReadOrWriteWhatOnlyHostRootMay()
    {
        // Without the user namespace, uid 0 owns both files (and DAC_OVERRIDE would bypass the modes anyway).
        var id = await f.Api.SubmitIdAsync(new
        {
            image = f.Busybox,
            capabilities = new[] { "DAC_OVERRIDE" },
            volumes = new[] { new { dataset = "hostonly", path = "/secret" } },
            command = new[] { "/bin/sh", "-c", string.Join("; ",
                $"cat /secret/{UserNamespaceServerFixture.SecretFile} 2>/dev/null && echo SECRET-READ || echo secret-denied",
                "echo intruder::0:0::/:/bin/sh >> /etc/passwd 2>/dev/null && echo PASSWD-WRITTEN || echo passwd-denied",
                "stat -c %u:%g /etc/passwd /secret") },
        });
        var stdout = await f.Api.SucceededStdoutAsync(id);

        // Files of host ids outside the mapping show as the overflow id 65534, and no capability applies to them.
        Assert.Equal("secret-denied\npasswd-denied\n65534:65534\n65534:65534\n", stdout);
        Assert.Equal(UserNamespaceServerFixture.SecretContent, await File.ReadAllTextAsync(Path.Combine(f.DatasetDir, UserNamespaceServerFixture.SecretFile)));
    }

    [Fact]
    public async Task RootJob_WritesOutputs_ThatTheApiListsAndServes()
    {
        var id = await f.Api.SubmitIdAsync(new
        {
            image = f.Busybox,
            command = new[] { "/bin/sh", "-c", "mkdir /outputs/sub && echo result-by-root > /outputs/result.txt && printf deep > /outputs/sub/deep.txt && echo done" },
        });
        Assert.Equal("done\n", await f.Api.SucceededStdoutAsync(id));

        var listed = JsonDocument.Parse(await f.Client.GetStringAsync($"/api/v1/jobs/{id}/outputs")).RootElement;
        Assert.Equal(
            [("result.txt", 15L, Sha256("result-by-root\n")), ("sub/deep.txt", 4L, Sha256("deep"))],
            listed.EnumerateArray().Select(o => (o.GetProperty("path").GetString()!, o.GetProperty("size").GetInt64(), o.GetProperty("sha256").GetString()!)));
        Assert.Equal("result-by-root\n", await f.Client.GetStringAsync($"/api/v1/jobs/{id}/outputs/result.txt"));
        Assert.Equal("deep", await f.Client.GetStringAsync($"/api/v1/jobs/{id}/outputs/sub/deep.txt"));
        // On the host the directory and what the job wrote belong to the mapped root, not to host root.
        var outputs = Path.Combine(JobDir(id), "outputs");
        Assert.Equal([Root, Root, Root, Root], new[] { outputs, Path.Combine(outputs, "result.txt"), Path.Combine(outputs, "sub"), Path.Combine(outputs, "sub", "deep.txt") }.Select(HostOwner));
    }

    [Fact]
    public async Task ImageConfigUser_IsRemappedToo_AndWritesOutputs()
    {
        var id = await f.Api.SubmitIdAsync(new
        {
            image = f.Nobody,
            command = new[] { "/bin/sh", "-c", "id -u; id -g; grep '^Uid:' /proc/self/status; echo by-nobody > /outputs/n.txt" },
        });
        Assert.Equal(["65534", "65534", "Uid: 65534 65534 65534 65534"], Lines(await f.Api.SucceededStdoutAsync(id)).Select(Words));

        Assert.Equal("by-nobody\n", await f.Client.GetStringAsync($"/api/v1/jobs/{id}/outputs/n.txt"));
        Assert.Equal(Nobody, HostOwner(Path.Combine(JobDir(id), "outputs", "n.txt")));
        Assert.Equal(Nobody, HostOwner(Path.Combine(JobDir(id), "outputs")));
    }

    [Fact]
    public async Task UploadedInputs_AreReadableByRootAndNobody_AndWritableByNeither()
    {
        const string script = "cat /inputs/hello.txt; touch /inputs/new 2>/dev/null && echo CREATED || echo create-denied; " +
            "echo more >> /inputs/hello.txt 2>/dev/null && echo APPENDED || echo append-denied; stat -c %u /inputs/hello.txt";
        // Both at once: the node runs two jobs in parallel.
        var asRoot = PostWithInputAsync(new { image = f.Busybox, capabilities = new[] { "DAC_OVERRIDE" }, command = new[] { "/bin/sh", "-c", script } });
        var asNobody = PostWithInputAsync(new { image = f.Nobody, command = new[] { "/bin/sh", "-c", script } });
        var ids = await Task.WhenAll(asRoot, asNobody);

        foreach (var id in ids)
        {
            // Inputs are host root's files: the overflow id inside, read-only for every container user.
            Assert.Equal("hello input\ncreate-denied\nappend-denied\n65534\n", await f.Api.SucceededStdoutAsync(id));
            Assert.Equal("hello input\n", await File.ReadAllTextAsync(Path.Combine(JobDir(id), "inputs", "hello.txt")));
            Assert.False(File.Exists(Path.Combine(JobDir(id), "inputs", "new")));
        }
    }

    [Fact]
    public async Task HostNetworkJob_IsRemappedToo_AndGetsTheHostsSysReadOnly()
    {
        // sysfs cannot be mounted by a user namespace that does not own the network namespace: the runtime binds the host's.
        var hostInterfaces = Directory.EnumerateFileSystemEntries("/sys/class/net").Select(Path.GetFileName).Where(n => n != "lo").ToList();
        var id = await f.Api.SubmitIdAsync(new
        {
            image = f.Busybox,
            network = "host",
            command = new[] { "/bin/sh", "-c", "head -1 /proc/self/uid_map; touch /sys/x 2>/dev/null && echo SYS-RW || echo sys-ro; ls /sys/class/net" },
        });
        var lines = Lines(await f.Api.SucceededStdoutAsync(id));

        Assert.Equal([Mapping, "sys-ro"], lines[..2].Select(Words));
        Assert.Contains(lines[2..], hostInterfaces.Contains);
    }

    [Fact]
    public async Task RunDirNotSearchableByTheMappedRoot_FailsTheJob_NamingTheDirectory()
    {
        // runc mounts the rootfs as the mapped root; a 0700 directory above it (a data dir made under umask 077) blocks it.
        var run = Path.Combine(f.DataDir, "run");
        Directory.CreateDirectory(run);
        var mode = File.GetUnixFileMode(run);
        File.SetUnixFileMode(run, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        JsonElement done;
        try
        {
            done = await f.Api.WaitForFinalAsync(await f.Api.SubmitIdAsync(new { image = f.Busybox, command = new[] { "true" } }));
        }
        finally
        {
            File.SetUnixFileMode(run, mode);
        }

        Assert.Equal("failed", done.GetProperty("state").GetString());
        Assert.Equal("start_failed", done.GetProperty("reason").GetString());
        Assert.Contains($"cannot reach the rootfs: {run} (mode 700, owner 0:{Root}) is not searchable by it; run chmod o+x {run}", done.GetProperty("message").GetString());
    }

    [Fact]
    public async Task JobFiles_AreUnreadableByNobody_WhenTheMappedRootMustSearchTheDataDirectory()
    {
        var id = await PostWithInputAsync(new { image = f.Busybox, command = new[] { "/bin/sh", "-c", "cat /inputs/hello.txt; echo o > /outputs/o.txt; chmod 0666 /outputs/o.txt" } });
        Assert.Equal("hello input\n", await f.Api.SucceededStdoutAsync(id));
        var jobDir = JobDir(id);

        // The embedded PostgreSQL's group and the namespace's differ: the data directory is search-only for others,
        // run/ and jobs/ are searchable by the namespace's group only.
        Assert.Equal("711 0:0", (await ExternalCommand.RunAsync("stat", ["-c", "%a %u:%g", f.DataDir])).Trim());
        Assert.Equal($"710 0:{Root}", (await ExternalCommand.RunAsync("stat", ["-c", "%a %u:%g", Path.Combine(f.DataDir, "jobs")])).Trim());
        Assert.Equal($"710 0:{Root}", (await ExternalCommand.RunAsync("stat", ["-c", "%a %u:%g", Path.Combine(f.DataDir, "run")])).Trim());
        var paths = new List<string> { f.DataDir, jobDir };
        paths.AddRange(Directory.EnumerateFileSystemEntries(f.DataDir));
        paths.AddRange(HostUserProbe.Tree(jobDir));
        Assert.Contains(Path.Combine(jobDir, "outputs", "o.txt"), paths);
        Assert.Empty(await HostUserProbe.ReadableByNobodyAsync(paths));
    }

    private async Task<string> PostWithInputAsync(object spec)
    {
        using var form = new MultipartFormDataContent
        {
            { new StringContent(JsonSerializer.Serialize(spec, BatchRunnerClient.Json), Encoding.UTF8, "application/json"), "spec" },
            { new ByteArrayContent("hello input\n"u8.ToArray()), "file", "hello.txt" },
        };
        return BatchRunnerClient.Id(await BatchRunnerClient.CreatedAsync(await f.Client.PostAsync("/api/v1/jobs", form)));
    }

    private static string Sha256(string s) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(s)));
}
