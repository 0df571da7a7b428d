using BatchRunner.Native;

namespace BatchRunner.Runtime.Tests;

/// <summary>
/// How the runtime's launcher starts `run --detach` (<see cref="Libc.Spawn"/>): the child opens its standard streams
/// itself, so this process never holds the write end of a container's log FIFO, and it starts with every signal at its
/// default disposition, unblocked, whatever this process set up for itself.
/// </summary>
public sealed class SpawnFacts : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("br-spawn-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private async Task<(int Code, int? Signal)> RunAsync(string[] argv, IReadOnlyList<Libc.SpawnOpen> opens, params string[] env)
    {
        var child = ChildExit.Watch(Libc.Spawn(argv[0], argv, env, opens));
        return await child.Task.WaitAsync(TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task Spawn_GivesTheChildTheFilesItOpened_AsTheDescriptorsNamed()
    {
        var (stdout, stderr) = (Path.Combine(_dir, "out"), Path.Combine(_dir, "err"));
        File.WriteAllText(stdout, "");
        File.WriteAllText(stderr, "");

        var exit = await RunAsync(["/bin/sh", "-c", "read line; echo \"out $BR_TEST [$line]\"; echo err >&2; exit 3"],
            [new(0, "/dev/null", Libc.O_RDONLY), new(1, stdout, Libc.O_WRONLY), new(2, stderr, Libc.O_WRONLY)], "BR_TEST=yes");

        Assert.Equal((3, null), exit);
        Assert.Equal("out yes []\n", File.ReadAllText(stdout));
        Assert.Equal("err\n", File.ReadAllText(stderr));
        // Opened in the child only: this process holds no descriptor of them (it may hold others: the child waiter's eventfd).
        var open = Directory.GetFiles("/proc/self/fd").Select(fd => { try { return File.ResolveLinkTarget(fd, false)?.FullName; } catch (IOException) { return null; } });
        Assert.DoesNotContain(open, target => target == stdout || target == stderr);
    }

    [Fact]
    public async Task Spawn_StartsTheChildWithNoSignalIgnoredOrBlocked_WhenThisProcessIgnoresOne()
    {
        var status = Path.Combine(_dir, "status");
        File.WriteAllText(status, "");
        // A disposition this process set (here SIGHUP ignored, which exec would keep) must not reach the runtime and the container.
        const int SIGHUP = 1;
        var previous = signal(SIGHUP, SIG_IGN);
        (int, int?) exit;
        try { exit = await RunAsync(["/bin/cat", "/proc/self/status"], [new(1, status, Libc.O_WRONLY)]); }
        finally { signal(SIGHUP, previous); }

        Assert.Equal((0, null), exit);
        var lines = File.ReadAllLines(status);
        Assert.Equal("0000000000000000", lines.Single(l => l.StartsWith("SigIgn:", StringComparison.Ordinal)).Split('\t')[1]);
        Assert.Equal("0000000000000000", lines.Single(l => l.StartsWith("SigBlk:", StringComparison.Ordinal)).Split('\t')[1]);
    }

    private static readonly nint SIG_IGN = 1;

    [System.Runtime.InteropServices.DllImport("libc")]
    private static extern nint signal(int signal, nint handler);

    [Fact]
    public void Spawn_Throws_WhenTheProgramDoesNotExist()
    {
        var e = Assert.Throws<IOException>(() => Libc.Spawn("/nonexistent/runc", ["/nonexistent/runc"], [], []));
        Assert.Contains("/nonexistent/runc", e.Message);
    }
}
