using BatchRunner.Native;
namespace BatchRunner.Runtime;

/// <summary>
/// The exit of a child of this process that .NET's Process does not know: a container's init (we are its subreaper),
/// or the runtime process that started it (<c>run --detach</c>, spawned by RuncRuntime). One dedicated
/// thread blocks in waitid until the process is a zombie, then reaps it. Signals go through
/// <see cref="Kill"/>, which never signals a reaped pid (that number may already be someone else's).
/// </summary>
internal sealed class ChildExit
{
    private static readonly System.Collections.Concurrent.ConcurrentDictionary<int, byte> s_watched = new();
    private readonly object _gate = new();
    private bool _reaping;

    private ChildExit(int pid)
    {
        Pid = pid;
        s_watched[pid] = 0;
        Task = System.Threading.Tasks.Task.Factory.StartNew(Wait, CancellationToken.None,
            TaskCreationOptions.LongRunning | TaskCreationOptions.DenyChildAttach, TaskScheduler.Default);
    }

    public int Pid { get; }

    /// <summary>(exit code, null) or (128+N, N) when signal N killed it.</summary>
    public Task<(int Code, int? Signal)> Task { get; }

    public static ChildExit Watch(int pid) => new(pid);

    /// <summary>Whether a <see cref="ChildExit"/> owns <paramref name="pid"/> (the orphan reaper leaves it alone).</summary>
    public static bool IsWatched(int pid) => s_watched.ContainsKey(pid);

    public bool HasExited => Task.IsCompleted;

    /// <summary>SIGKILL to the init (the kernel then kills the rest of its PID namespace). A no-op once it exited.</summary>
    public void Kill()
    {
        lock (_gate)
        {
            if (!_reaping) Libc.kill(Pid, Libc.SIGKILL);
        }
    }

    private (int, int?) Wait()
    {
        Libc.WaitUntilExited(Pid);
        lock (_gate) _reaping = true;
        try { return Libc.WaitForExit(Pid); }
        finally { s_watched.TryRemove(Pid, out _); }
    }
}
