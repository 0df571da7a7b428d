using System.Formats.Tar;
using System.IO.Compression;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using BatchRunner.Testing;

namespace BatchRunner.Server.Tests;

/// <summary>Isolation and limits end to end: spec fields through the HTTP API, real runc, real CNI plugins.</summary>
[Collection(IsolationServerCollection.Name)]
public sealed class IsolationApiFacts(IsolationServerFixture f)
{
    private string Staging => Path.Combine(f.DataDir, "inputs-staging");

    private static MultipartFormDataContent Multipart(object spec, params (string Part, string FileName, byte[] Content)[] files) =>
        BatchRunnerClient.Multipart(spec, files);

    private static byte[] Zip(params (string Name, string Content, bool Symlink)[] entries)
    {
        var ms = new MemoryStream();
        using (var zip = new ZipArchive(ms, ZipArchiveMode.Create, leaveOpen: true))
        {
            foreach (var (name, content, symlink) in entries)
            {
                var e = zip.CreateEntry(name);
                // Unix mode in the high 16 bits: S_IFLNK|0777 for a link (content = target), S_IFREG|0644 otherwise.
                e.ExternalAttributes = (symlink ? 0xA1FF : 0x81A4) << 16;
                using var w = new StreamWriter(e.Open());
                w.Write(content);
            }
        }
        return ms.ToArray();
    }

    private static byte[] TarGz(params (string Name, string Content)[] entries)
    {
        var ms = new MemoryStream();
        using (var gz = new GZipStream(ms, CompressionLevel.Fastest, leaveOpen: true))
        using (var tar = new TarWriter(gz))
        {
            foreach (var (name, content) in entries)
                tar.WriteEntry(new PaxTarEntry(TarEntryType.RegularFile, name) { DataStream = new MemoryStream(Encoding.UTF8.GetBytes(content)) });
        }
        return ms.ToArray();
    }

    /// <summary>A tar.xz made by the real tar and xz (xz-utils), as users make them.</summary>
    private static async Task<byte[]> TarXzAsync(string name, string content)
    {
        var dir = Directory.CreateTempSubdirectory("br-txz-").FullName;
        try
        {
            Directory.CreateDirectory(Path.Combine(dir, "src", Path.GetDirectoryName(name)!));
            await File.WriteAllTextAsync(Path.Combine(dir, "src", name), content);
            await ExternalCommand.RunAsync("tar", ["-cJf", Path.Combine(dir, "a.tar.xz"), "-C", Path.Combine(dir, "src"), "."]);
            return await File.ReadAllBytesAsync(Path.Combine(dir, "a.tar.xz"));
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    private async Task<int> JobCountAsync()
    {
        var list = JsonDocument.Parse(await f.Client.GetStringAsync("/api/v1/jobs?limit=1000")).RootElement;
        return list.GetProperty("items").GetArrayLength();
    }

    [Fact]
    public async Task CpuQuota_GivesATwoThreadBusyLoopHalfACpu()
    {
        var id = await f.Api.SubmitIdAsync(new
        {
            image = f.Busybox,
            command = new[] { "/bin/sh", "-c", "(while :; do :; done) & a=$!; (while :; do :; done) & b=$!; sleep 4; kill $a $b" },
            resources = new { cpus = 0.5 },
        });
        var done = await f.Api.WaitForFinalAsync(id);
        Assert.Equal("succeeded", done.GetProperty("state").GetString());
        var wall = (done.GetProperty("finishedAt").GetDateTimeOffset() - done.GetProperty("startedAt").GetDateTimeOffset()).TotalSeconds;
        var cpu = done.GetProperty("usage").GetProperty("cpuSeconds").GetDouble();
        var rate = cpu / wall;
        Assert.True(rate is > 0.5 * 0.85 and < 0.5 * 1.15, $"{cpu:0.000} CPU-s over {wall:0.000} s = {rate:0.000} CPU/s, expected 0.5 ± 15%");
        Assert.True(done.GetProperty("usage").GetProperty("cpuThrottledPeriods").GetInt64() > 0);
    }

    [Fact]
    public async Task PidsLimit_StopsAForkLoop_AndTheJobEndsCleanly()
    {
        var id = await f.Api.SubmitIdAsync(new
        {
            image = f.Busybox,
            // Forks fail once 16 processes exist.
            command = new[] { "/bin/sh", "-c", "for i in $(seq 1 60); do sleep 3 & done 2>/dev/null; wait; echo survived" },
            resources = new { pids = 16 },
        });
        var done = await f.Api.WaitForFinalAsync(id);
        // busybox ash gives up (exit 2) when a fork fails: the job fails cleanly, or survives; it never hangs.
        var state = done.GetProperty("state").GetString();
        Assert.True(state == "succeeded" || (state == "failed" && done.GetProperty("reason").GetString() == "exit_code"), done.ToString());
        Assert.True(done.GetProperty("usage").GetProperty("pidsLimitHits").GetInt64() > 0);
        // The host still forks.
        Assert.Equal("ok\n", await ExternalCommand.RunAsync("/bin/sh", ["-c", "echo ok"]));
    }

    [Fact]
    public async Task HostileJob_CannotMountUnshareUseRawSocketsOrWriteInputs_AndSeesOnlyItself()
    {
        var script = string.Join("; ",
            "cat /inputs/hello.txt",
            "touch /inputs/x 2>/dev/null && echo inputs-WRITABLE || echo inputs-ro",
            "mount -t tmpfs none /tmp 2>/dev/null && echo MOUNTED || echo mount-refused",
            "umount /proc 2>/dev/null && echo UMOUNTED || echo umount-refused",
            "unshare -U -r true 2>/dev/null && echo UNSHARED || echo unshare-refused",
            "ping -c 1 -W 1 127.0.0.1 >/dev/null 2>&1 && echo PINGED || echo raw-refused",
            "/bin/busybox-nope 2>/dev/null; tr '\\0' ' ' < /proc/1/cmdline | cut -c1-9",
            "ls /proc | grep -c '^[0-9]'");
        var response = await f.Client.PostAsync("/api/v1/jobs", Multipart(
            new { image = f.Busybox, command = new[] { "/bin/sh", "-c", script } },
            ("file", "hello.txt", "hello input\n"u8.ToArray())));
        Assert.True(response.StatusCode == HttpStatusCode.Created, await response.Content.ReadAsStringAsync());
        var id = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.GetProperty("id").GetString()!;
        var done = await f.Api.WaitForFinalAsync(id);
        var lines = (await f.Api.LogsAsync(id, "stdout")).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("succeeded", done.GetProperty("state").GetString());
        Assert.Equal(["hello input", "inputs-ro", "mount-refused", "umount-refused", "unshare-refused", "raw-refused", "/bin/sh -"], lines[..7]);
        Assert.InRange(int.Parse(lines[7]), 1, 5);
    }

    [Fact]
    public async Task Multipart_UnpacksZipAndTarGz_AndStoresPlainFiles_UnderInputs()
    {
        var zip = Zip(("data/a.txt", "A", false), ("data/sub/b.txt", "B", false), ("data/link-to-a", "a.txt", true));
        var tgz = TarGz(("t/c.txt", "C"));
        var txz = await TarXzAsync("x/d.txt", "D");
        var response = await f.Client.PostAsync("/api/v1/jobs", Multipart(
            new { image = f.Busybox, command = new[] { "/bin/sh", "-c", "cd /inputs && find . | sort && cat data/a.txt data/sub/b.txt data/link-to-a t/c.txt x/d.txt plain.bin" } },
            ("archive", "d.zip", zip), ("archive", "t.tar.gz", tgz), ("archive", "x.tar.xz", txz), ("file", "plain.bin", "P"u8.ToArray())));
        Assert.True(response.StatusCode == HttpStatusCode.Created, await response.Content.ReadAsStringAsync());
        var id = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.GetProperty("id").GetString()!;
        var done = await f.Api.WaitForFinalAsync(id);
        var stdout = await f.Api.LogsAsync(id, "stdout");
        Assert.True(done.GetProperty("state").GetString() == "succeeded", stdout);
        Assert.Equal(".\n./data\n./data/a.txt\n./data/link-to-a\n./data/sub\n./data/sub/b.txt\n./plain.bin\n./t\n./t/c.txt\n./x\n./x/d.txt\nABACDP", stdout);
    }

    [Theory]
    [InlineData("dotdot")]
    [InlineData("absolute")]
    [InlineData("symlink-escape")]
    [InlineData("symlink-absolute")]
    public async Task BadArchive_Gets400_AndNothingIsStoredOrQueued(string kind)
    {
        var marker = "escaped-" + Guid.NewGuid().ToString("N")[..8];
        var zip = kind switch
        {
            "dotdot" => Zip(("ok.txt", "fine", false), ($"../../{marker}", "pwned", false)),
            "absolute" => Zip(("ok.txt", "fine", false), ($"/tmp/{marker}", "pwned", false)),
            "symlink-escape" => Zip(("ok.txt", "fine", false), ("evil", "../../../../../../tmp", true)),
            _ => Zip(("ok.txt", "fine", false), ("evil", "/etc/passwd", true)),
        };
        var before = await JobCountAsync();
        var response = await f.Client.PostAsync("/api/v1/jobs", Multipart(new { image = f.Busybox, command = new[] { "true" } }, ("archive", "bad.zip", zip)));
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.BadRequest, body);
        Assert.Contains("archive", body);
        Assert.Equal(before, await JobCountAsync());
        Assert.Empty(Directory.Exists(Staging) ? Directory.EnumerateFileSystemEntries(Staging) : []);
        Assert.False(File.Exists(Path.Combine("/tmp", marker)));
        Assert.False(File.Exists(Path.Combine(f.DataDir, marker)));
    }

    [Fact]
    public async Task TooLargeInputs_Get413_AndNothingIsStored()
    {
        var big = new byte[IsolationServerFixture.MaxInputBytes + 1];
        var response = await f.Client.PostAsync("/api/v1/jobs", Multipart(new { image = f.Busybox, command = new[] { "true" } }, ("file", "big.bin", big)));
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
        Assert.Empty(Directory.Exists(Staging) ? Directory.EnumerateFileSystemEntries(Staging) : []);
    }

    [Fact]
    public async Task Dataset_IsMountedReadOnly_AndUnknownDatasetsOrHostPathsAreRefused()
    {
        var stdout = await f.Api.RunAsync(new
        {
            image = f.Busybox,
            command = new[] { "/bin/sh", "-c", $"cat /data/{IsolationServerFixture.DatasetFile}; touch /data/x 2>/dev/null && echo WRITABLE || echo ro" },
            volumes = new[] { new { dataset = "testdata", path = "/data" } },
        });
        Assert.Equal(IsolationServerFixture.DatasetContent + "ro\n", stdout);
        Assert.False(File.Exists(Path.Combine(f.DatasetDir, "x")));

        var unknown = await f.Api.PostJobAsync(new { image = f.Busybox, volumes = new[] { new { dataset = "imagenet", path = "/data" } } });
        Assert.Equal(HttpStatusCode.BadRequest, unknown.StatusCode);
        Assert.Contains("unknown dataset", await unknown.Content.ReadAsStringAsync());
        var hostPath = await f.Api.PostJobAsync(new { image = f.Busybox, volumes = new[] { new { dataset = "/etc", path = "/data" } } });
        Assert.Equal(HttpStatusCode.BadRequest, hostPath.StatusCode);
        var procPath = await f.Api.PostJobAsync(new { image = f.Busybox, volumes = new[] { new { dataset = "testdata", path = "/proc/sys" } } });
        Assert.Equal(HttpStatusCode.BadRequest, procPath.StatusCode);
        var dotdot = await f.Api.PostJobAsync(new { image = f.Busybox, volumes = new[] { new { dataset = "testdata", path = "/data/../etc" } } });
        Assert.Equal(HttpStatusCode.BadRequest, dotdot.StatusCode);
    }

    [Fact]
    public async Task SpecFields_CapabilitiesUlimitsShmCpusetAndReadonlyRoot_ReachTheContainer()
    {
        var stdout = await f.Api.RunAsync(new
        {
            image = f.Busybox,
            user = "65534",
            command = new[] { "/bin/sh", "-c", "grep CapEff /proc/self/status | cut -f2; ulimit -n; df -k /dev/shm | tail -1 | awk '{print $2}'; grep Cpus_allowed_list /proc/self/status | cut -f2; touch /rootfs-file 2>/dev/null && echo WRITABLE || echo root-ro; touch /tmp/ok && echo tmp-rw" },
            capabilities = new[] { "NET_BIND_SERVICE" },
            ulimits = new { nofile = 4096 },
            shmSize = "256Mi",
            rootfsReadonly = true,
            resources = new { cpuset = "0", cpuShares = 512, memory = "512Mi" },
        });
        Assert.Equal("0000000000000400\n4096\n262144\n0\nroot-ro\ntmp-rw\n", stdout);
    }

    [Theory]
    [InlineData("""{"image":"x","network":"overlay"}""", "network")]
    [InlineData("""{"image":"x","capabilities":["SYS_ADMIN"]}""", "capabilities")]
    [InlineData("""{"image":"x","capabilities":["NOT_A_CAP"]}""", "capabilities")]
    [InlineData("""{"image":"x","shmSize":"1Gi","resources":{"memory":"64Mi"}}""", "shmSize")]
    [InlineData("""{"image":"x","ulimits":{"nofile":99999999}}""", "ulimits.nofile")]
    [InlineData("""{"image":"x","ulimits":{"bogus":1}}""", "ulimits.bogus")]
    [InlineData("""{"image":"x","resources":{"cpuset":"0-4096"}}""", "resources.cpuset")]
    [InlineData("""{"image":"x","resources":{"cpuset":"zero"}}""", "resources.cpuset")]
    [InlineData("""{"image":"x","resources":{"cpuShares":1}}""", "resources.cpuShares")]
    public async Task InvalidIsolationFields_Get400_NamingTheField(string json, string field)
    {
        var response = await f.Client.PostAsync("/api/v1/jobs", new StringContent(json, Encoding.UTF8, "application/json"));
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.BadRequest, body);
        Assert.True(JsonDocument.Parse(body).RootElement.GetProperty("errors").TryGetProperty(field, out _), body);
    }

    [Fact]
    public async Task HostLoopback_IsUnreachableInNoneMode_AndReachableInHostMode()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        var script = $"echo from-job | nc -w 2 127.0.0.1 {port} && echo reached || echo unreachable";

        Assert.Equal("unreachable\n", await f.Api.RunAsync(new { image = f.Busybox, command = new[] { "/bin/sh", "-c", script } }));

        var accept = Task.Run(async () =>
        {
            using var c = await listener.AcceptTcpClientAsync();
            return (await new StreamReader(c.GetStream()).ReadLineAsync())?.Trim();
        });
        Assert.Equal("reached\n", await f.Api.RunAsync(new { image = f.Busybox, network = "host", command = new[] { "/bin/sh", "-c", script } }));
        Assert.Equal("from-job", await accept.WaitAsync(TimeSpan.FromSeconds(30)));
    }

    [Fact]
    public async Task BridgeJobs_GetDifferentAddressesInTheSubnet_AndCannotReachEachOther()
    {
        var prefix = f.Subnet[..^4]; // "10.x.y."
        var a = await f.Api.SubmitIdAsync(new
        {
            image = f.Busybox, network = "bridge",
            command = new[] { "/bin/sh", "-c", "ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1; timeout 20 nc -l -p 7000; true" },
        });
        var addrA = (await Poll.UntilAsync(() => f.Api.LogsAsync(a, "stdout"), s => s.Contains('\n'), TimeSpan.FromSeconds(60), "job A's address")).Trim();
        Assert.StartsWith(prefix, addrA);

        var stdoutB = await f.Api.RunAsync(new
        {
            image = f.Busybox, network = "bridge",
            command = new[] { "/bin/sh", "-c", $"A=$(ip -4 -o addr show eth0 | awk '{{print $4}}' | cut -d/ -f1); echo $A; echo hi | nc -w 2 {addrA} 7000 && echo reached-a || echo isolated; ping -c1 -W1 {prefix}1 >/dev/null 2>&1; ip route | grep -c default; grep -c \"^$A[[:space:]]$(hostname)\" /etc/hosts; grep -c '^nameserver 127\\.' /etc/resolv.conf; true" },
        });
        var lines = stdoutB.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("1", lines[3]); // its own /etc/hosts maps its hostname to its bridge address
        Assert.Equal("0", lines[4]); // its /etc/resolv.conf exists and names no (unreachable) loopback resolver
        Assert.StartsWith(prefix, lines[0]);
        Assert.NotEqual(addrA, lines[0]);
        Assert.Equal("isolated", lines[1]);
        Assert.Equal("1", lines[2]); // a default route via the bridge's gateway (NAT egress when enabled)

        await f.Client.PostAsync($"/api/v1/jobs/{a}/cancel", null);
        await f.Api.WaitForFinalAsync(a);
        // Nothing left: no namespace, no lease. (A final end is recorded first and the container released just after it:
        // README, "When a job's end becomes visible".)
        var leases = Path.Combine(f.BridgeState, "ipam", "brs-" + f.BridgeName[3..]);
        await Poll.UntilAsync(() =>
            !Directory.EnumerateFiles("/run/netns").Any(n => Path.GetFileName(n).Contains(Guid.Parse(a).ToString("N"))) &&
            !(Directory.Exists(leases) && Directory.EnumerateFiles(leases).Any(p => !Path.GetFileName(p).StartsWith("last_reserved") && Path.GetFileName(p) != "lock")),
            TimeSpan.FromSeconds(10), "job A's network namespace and address lease to be released");
    }

    [Fact]
    public async Task BridgeJob_CannotReachAServerOnTheHostsBridgeAddress_ButTalksToItselfOnLoopback()
    {
        // Listening on every host address, as a service bound to 0.0.0.0 does: the bridge's gateway address included.
        using var host = new TcpListener(IPAddress.Any, 0);
        host.Start();
        var port = ((IPEndPoint)host.LocalEndpoint).Port;
        var gateway = f.Subnet[..^4] + "1";
        var stdout = await f.Api.RunAsync(new
        {
            image = f.Busybox, network = "bridge",
            command = new[]
            {
                "/bin/sh", "-c",
                $"nc -w 2 {gateway} {port} </dev/null 2>&1; echo host=$?; " +
                "nc -l -p 7001 & for i in $(seq 100); do echo self | nc -w 1 127.0.0.1 7001 2>/dev/null && { echo talked=yes; break; }; usleep 50000; done; kill $!; true",
            },
        });
        Assert.Contains($"can't connect to remote host ({gateway}): Connection refused", stdout);
        Assert.Contains("host=1", stdout);
        Assert.False(host.Pending(), "the job connected to the host");
        Assert.Contains("talked=yes", stdout);
    }
}
