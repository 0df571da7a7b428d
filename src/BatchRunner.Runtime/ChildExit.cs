using BatchRunner.Native;
namespace BatchRunner.Runtime;

/// <summary>
/// The exit of a child of this process that .NET's Process does not know: a container's init (we are its subreaper),
/// or the runtime process that started it (<c>run --detach</c>, spawned by RuncRuntime). Once the process is a zombie
/// (<see cref="ChildWaiter"/>'s pidfd poll, or where there are no pidfds a dedicated thread blocked in waitid), it is reaped. Signals go through
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
        // Continuations never run on the waiter's thread, which serves every child.
        var exit = new TaskCompletionSource<(int Code, int? Signal)>(TaskCreationOptions.RunContinuationsAsynchronously);
        Task = exit.Task;
        if (ChildWaiter.TryWatch(pid, () => Reap(exit))) return;
        System.Threading.Tasks.Task.Factory.StartNew(() =>
        {
            try { Libc.WaitUntilExited(Pid); }
            catch (IOException e)
            {
                s_watched.TryRemove(Pid, out _);
                exit.SetException(e);
                return;
            }
            Reap(exit);
        }, CancellationToken.None, TaskCreationOptions.LongRunning | TaskCreationOptions.DenyChildAttach, TaskScheduler.Default);
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

    // The process has exited and is a zombie: its pid is still ours until this reaps it.
    private void Reap(TaskCompletionSource<(int Code, int? Signal)> exit)
    {
        lock (_gate) _reaping = true;
        try { exit.SetResult(Libc.WaitForExit(Pid)); }
        catch (IOException e) { exit.SetException(e); }
        finally { s_watched.TryRemove(Pid, out _); }
    }
}
