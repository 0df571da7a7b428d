using System.Net.Sockets;
using System.Security.Cryptography;
using BatchRunner.Runtime.Disk;

namespace BatchRunner.Runtime.Tests.Disk;

/// <summary>Moving a job's /outputs to the host: real files, devices, FIFOs and sockets in the test's own directory.</summary>
public sealed class OutputsTransferFacts : IDisposable
{
    private const long MiB = 1L << 20;
    private readonly string _dir = Directory.CreateDirectory(Path.Combine(Path.GetTempPath(), "br-outx-" + Guid.NewGuid().ToString("N")[..8])).FullName;
    private string Source => Path.Combine(_dir, "src");
    private string Target => Path.Combine(_dir, "dst");

    public OutputsTransferFacts() => Directory.CreateDirectory(Source);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void Move_RemovesSetuidAndSetgid_AndSaysWhere()
    {
        File.WriteAllText(Path.Combine(Source, "tool"), "#!/bin/sh\n");
        File.SetUnixFileMode(Path.Combine(Source, "tool"), (UnixFileMode)0b100_111_101_101); // 4755
        Directory.CreateDirectory(Path.Combine(Source, "shared"));
        File.SetUnixFileMode(Path.Combine(Source, "shared"), (UnixFileMode)0b010_111_101_101); // 2755
        File.WriteAllText(Path.Combine(Source, "plain"), "p");

        var report = OutputsTransfer.Move(Source, Target);

        Assert.Equal(0b111_101_101u, DiskTestHost.Stat(Path.Combine(Target, "tool")).Mode & 0b111_111_111_111);
        Assert.Equal(0b111_101_101u, DiskTestHost.Stat(Path.Combine(Target, "shared")).Mode & 0b111_111_111_111);
        Assert.Equal("#!/bin/sh\n", File.ReadAllText(Path.Combine(Target, "tool")));
        Assert.Equal(["shared", "tool"], report.SetuidStripped);
        Assert.Equal("outputs: setuid/setgid bits removed from shared, tool", report.Describe());
        Assert.Equal(2, report.Files);
    }

    [Fact]
    public void Move_LeavesOutDevicesFifosSocketsAndSymlinks_AndNamesThem()
    {
        DiskTestHost.MakeCharDevice(Path.Combine(Source, "null2"), 1, 3);
        DiskTestHost.MakeFifo(Path.Combine(Source, "pipe"));
        using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        socket.Bind(new UnixDomainSocketEndPoint(Path.Combine(Source, "sock")));
        File.CreateSymbolicLink(Path.Combine(Source, "shadow"), "/etc/shadow");
        File.WriteAllText(Path.Combine(Source, "result.txt"), "42");

        var report = OutputsTransfer.Move(Source, Target);

        Assert.Equal(["result.txt"], Directory.GetFileSystemEntries(Target).Select(Path.GetFileName));
        Assert.Equal("42", File.ReadAllText(Path.Combine(Target, "result.txt")));
        Assert.Equal("outputs: not kept (only regular files and directories are): null2 (character device), pipe (FIFO), " +
            "shadow (symbolic link), sock (socket)", report.Describe());
    }

    [Fact]
    public void Move_KeepsHolesAsHolesAndHardLinksAsLinks_SoTheHostHoldsNoMoreThanTheVolume()
    {
        var sparse = Path.Combine(Source, "sparse");
        using (var f = new FileStream(sparse, FileMode.CreateNew, FileAccess.Write))
        {
            f.SetLength(64L << 30);
            f.Position = 32L << 30;
            f.Write("middle"u8);
        }
        var data = RandomNumberGenerator.GetBytes((int)(4 * MiB));
        File.WriteAllBytes(Path.Combine(Source, "a"), data);
        for (var i = 0; i < 50; i++) DiskTestHost.Link(Path.Combine(Source, "a"), Path.Combine(Source, $"link{i}"));

        var report = OutputsTransfer.Move(Source, Target);

        var copied = Path.Combine(Target, "sparse");
        Assert.Equal(64L << 30, new FileInfo(copied).Length);
        Assert.InRange(DiskTestHost.AllocatedBytes(copied), 0, 1 * MiB);
        using (var f = File.OpenRead(copied))
        {
            f.Position = 32L << 30;
            var buf = new byte[6];
            f.ReadExactly(buf);
            Assert.Equal("middle"u8.ToArray(), buf);
        }
        Assert.Equal(data, File.ReadAllBytes(Path.Combine(Target, "link49")));
        Assert.Equal(51u, DiskTestHost.Stat(Path.Combine(Target, "a")).Nlink);
        Assert.Equal(DiskTestHost.Stat(Path.Combine(Target, "a")).Inode, DiskTestHost.Stat(Path.Combine(Target, "link7")).Inode);
        Assert.Equal(52, report.Files);
        Assert.InRange(report.Bytes, 4 * MiB, 4 * MiB + 64 * 1024);
        Assert.Null(report.Describe());
    }

    [Fact]
    public void Move_KeepsTreeOwnersModesAndTimes()
    {
        var nested = Directory.CreateDirectory(Path.Combine(Source, "a", "b")).FullName;
        File.WriteAllText(Path.Combine(nested, "f.csv"), "x,y\n");
        DiskTestHost.Chown(Path.Combine(nested, "f.csv"), 1234, 5678);
        DiskTestHost.Chown(Source, 1000, 1000);
        File.SetUnixFileMode(Path.Combine(nested, "f.csv"), (UnixFileMode)0b110_100_000);
        var mtime = new DateTime(2020, 1, 2, 3, 4, 5, DateTimeKind.Utc);
        File.SetLastWriteTimeUtc(Path.Combine(nested, "f.csv"), mtime);
        Directory.SetLastWriteTimeUtc(Path.Combine(Source, "a"), mtime);

        OutputsTransfer.Move(Source, Target);

        var f = Path.Combine(Target, "a", "b", "f.csv");
        Assert.Equal("x,y\n", File.ReadAllText(f));
        var st = DiskTestHost.Stat(f);
        Assert.Equal((1234u, 5678u, 0b110_100_000u), (st.Uid, st.Gid, st.Mode & 0xFFF));
        Assert.Equal(mtime, File.GetLastWriteTimeUtc(f));
        Assert.Equal(mtime, Directory.GetLastWriteTimeUtc(Path.Combine(Target, "a")));
        Assert.Equal(1000u, DiskTestHost.Stat(Target).Uid);
    }

    [Fact]
    public void Move_LeavesOutDirectoriesDeeperThanTheLimit_AndSaysSo()
    {
        var deep = Source;
        for (var i = 0; i < OutputsTransfer.MaxDepth + 5; i++) deep = Directory.CreateDirectory(Path.Combine(deep, "d")).FullName;

        var report = OutputsTransfer.Move(Source, Target);

        var kept = Enumerable.Repeat("d", OutputsTransfer.MaxDepth - 1);
        Assert.True(Directory.Exists(Path.Combine([Target, .. kept])));
        Assert.False(Directory.Exists(Path.Combine([Target, .. kept, "d"])));
        Assert.Equal($"{string.Join('/', kept)}/d", Assert.Single(report.NotKept).Path);
    }

    [Fact]
    public void Move_Refuses_WhenTheTargetIsNotEmpty()
    {
        Directory.CreateDirectory(Target);
        File.WriteAllText(Path.Combine(Target, "old"), "o");

        var e = Assert.Throws<IOException>(() => OutputsTransfer.Move(Source, Target));

        Assert.Equal($"outputs target {Target} is not empty", e.Message);
    }

    [Fact]
    public void Move_CreatesAnEmptyTarget_WhenThereIsNoSource()
    {
        Directory.Delete(Source);

        var report = OutputsTransfer.Move(Source, Target);

        Assert.Empty(Directory.EnumerateFileSystemEntries(Target));
        Assert.Equal(0, report.Files);
    }

    [Fact]
    public void Describe_NamesFiveAndCountsTheRest_WhenManyEntriesWereLeftOut()
    {
        var report = new OutputsTransferReport(0, 0, [], Enumerable.Range(0, 8).Select(i => new NotKeptEntry($"p{i}", "FIFO")).ToList());

        Assert.Equal("outputs: not kept (only regular files and directories are): p0 (FIFO), p1 (FIFO), p2 (FIFO), p3 (FIFO), p4 (FIFO) and 3 more",
            report.Describe());
    }
}
