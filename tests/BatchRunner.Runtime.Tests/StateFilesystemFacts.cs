namespace BatchRunner.Runtime.Tests;

/// <summary>The node's state tmpfs, mounted for real inside each test's own temp directory.</summary>
public sealed class StateFilesystemFacts : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "br-statefs-" + Guid.NewGuid().ToString("N")[..8]);
    private string State => Path.Combine(_dir, "state");

    private string MountLine() =>
        File.ReadLines("/proc/self/mountinfo").Last(l => l.Split(' ')[4] == State);

    [Fact]
    public void EnsureMounted_MountsAnOwnerOnlyNoexecTmpfs_OnceOnly()
    {
        Assert.True(StateFilesystem.EnsureMounted(State));

        var line = MountLine();
        Assert.Contains(" - tmpfs ", line);
        var options = line.Split(' ')[5].Split(',');
        Assert.Contains("nosuid", options);
        Assert.Contains("nodev", options);
        Assert.Contains("noexec", options);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(State));
        // A second start (after a crash, with the predecessor's state in it) keeps what is mounted.
        File.WriteAllText(Path.Combine(State, "kept"), "x");
        Assert.False(StateFilesystem.EnsureMounted(State));
        Assert.True(File.Exists(Path.Combine(State, "kept")));
        Assert.Single(File.ReadLines("/proc/self/mountinfo"), l => l.Split(' ')[4] == State);
    }

    [Fact]
    public void TryUnmount_KeepsItWhileAContainersStateOrBundleIsLeft_ThenUnmounts()
    {
        StateFilesystem.EnsureMounted(State);
        var runc = Path.Combine(State, "runc");
        var bundles = Path.Combine(State, "bundles");
        Directory.CreateDirectory(Path.Combine(runc, "br-x-1"));
        Directory.CreateDirectory(bundles);

        Assert.Equal($"{runc} is not empty", StateFilesystem.TryUnmount(State, runc, bundles));
        Assert.Equal("tmpfs", StateFilesystem.FilesystemTypeAt(State));

        Directory.Delete(Path.Combine(runc, "br-x-1"));
        Assert.Null(StateFilesystem.TryUnmount(State, runc, bundles));
        Assert.Null(StateFilesystem.FilesystemTypeAt(State));
        // What was on it went with it; the directory itself stays, empty.
        Assert.Empty(Directory.EnumerateFileSystemEntries(State));
        Assert.Null(StateFilesystem.TryUnmount(State, runc, bundles));
    }

    public void Dispose()
    {
        while (StateFilesystem.FilesystemTypeAt(State) is not null)
            if (BatchRunner.Native.Libc.umount2(State, BatchRunner.Native.Libc.MNT_DETACH) != 0) break;
        Directory.Delete(_dir, recursive: true);
    }
}
