namespace BatchRunner.Runtime;

/// <summary>
/// The exit of a container's init, which is this process's child (we are its subreaper). One dedicated
/// thread blocks in waitid until the process is a zombie, then reaps it. Signals go through
/// <see cref="Kill"/>, which never signals a reaped pid (that number may already be someone else's).
/// </summary>
internal sealed class ChildExit
{
    private readonly object _gate = new();
    private bool _reaping;

    private ChildExit(int pid)
    {
        Pid = pid;
        Task = System.Threading.Tasks.Task.Factory.StartNew(Wait, CancellationToken.None,
            TaskCreationOptions.LongRunning | TaskCreationOptions.DenyChildAttach, TaskScheduler.Default);
    }

    public int Pid { get; }

    /// <summary>(exit code, null) or (128+N, N) when signal N killed it.</summary>
    public Task<(int Code, int? Signal)> Task { get; }

    public static ChildExit Watch(int pid) => new(pid);

    public bool HasExited => Task.IsCompleted;

    /// <summary>SIGKILL to the init (the kernel then kills the rest of its PID namespace). A no-op once it exited.</summary>
    public void Kill()
    {
        lock (_gate)
        {
            if (!_reaping) Native.kill(Pid, Native.SIGKILL);
        }
    }

    private (int, int?) Wait()
    {
        Native.WaitUntilExited(Pid);
        lock (_gate) _reaping = true;
        return Native.WaitForExit(Pid);
    }
}
