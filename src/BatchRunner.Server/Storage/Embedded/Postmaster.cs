using System.Diagnostics;
using BatchRunner.Runtime;

namespace BatchRunner.Server.Storage.Embedded;

/// <summary>
/// One postmaster of the embedded cluster. Either a child this process started (<see cref="Launch"/>): its
/// exit, with its status, is seen the moment it happens; or one adopted from an earlier BatchRunner process
/// that crashed (<see cref="Adopt"/>): not our child, so its end is noticed by a liveness probe every
/// <see cref="AdoptedProbeInterval"/>, without an exit status.
/// </summary>
/// <remarks>
/// A launched postmaster is claimed in <see cref="OwnedChildren"/> until .NET has reaped it, so the
/// worker's orphan reaper can never take its exit status. Its stdout and stderr are pipes read here: only
/// what it prints before the logging collector starts (e.g. why it refused to start) arrives on them.
/// </remarks>
internal sealed class Postmaster : IDisposable
{
    public static readonly TimeSpan AdoptedProbeInterval = TimeSpan.FromSeconds(1);
    private const int TailLines = 20;

    private readonly Process? _process;
    private readonly IDisposable? _claim;
    private readonly CancellationTokenSource _disposed = new();
    private readonly Queue<string> _tail = new();
    private readonly string _dataDir;

    private Postmaster(int pid, string dataDir, Process? process)
    {
        Pid = pid;
        _dataDir = dataDir;
        _process = process;
        if (process is null)
        {
            Exited = WatchAdoptedAsync();
        }
        else
        {
            _claim = OwnedChildren.Claim(pid);
            _ = PumpAsync(process.StandardError);
            _ = PumpAsync(process.StandardOutput);
            Exited = WatchChildAsync(process);
        }
    }

    public int Pid { get; }

    /// <summary>True when a previous BatchRunner started it (it is not this process's child).</summary>
    public bool Adopted => _process is null;

    /// <summary>Completes when the postmaster is gone, with how it ended in words ("killed by signal 9 (SIGKILL)").</summary>
    public Task<string> Exited { get; }

    public bool HasExited => Exited.IsCompleted;

    /// <summary>The last lines it printed on stdout or stderr (before its logging collector took over).</summary>
    public string Tail()
    {
        lock (_tail) return string.Join(" | ", _tail);
    }

    public static Postmaster Launch(ProcessStartInfo start, string dataDir)
    {
        // Nothing we inherited (a shell's flock, say) may be held by a postmaster that outlives us.
        HostProcesses.CloseInheritedDescriptorsOnExec();
        start.UseShellExecute = false;
        start.RedirectStandardInput = true;
        start.RedirectStandardOutput = true;
        start.RedirectStandardError = true;
        // A cwd the postgres user can read, whatever ours is (the postmaster then changes into its data directory).
        start.WorkingDirectory = "/";
        var process = Process.Start(start) ?? throw new InvalidOperationException($"cannot start {start.FileName}");
        // Nothing to read: its stdin must not be ours (a terminal, a service's socket).
        process.StandardInput.Close();
        return new Postmaster(process.Id, dataDir, process);
    }

    public static Postmaster Adopt(int pid, string dataDir) => new(pid, dataDir, null);

    /// <summary>Sends <paramref name="signal"/> while it is still this cluster's postmaster (never to a reused pid).</summary>
    public void Signal(int signal)
    {
        if (HasExited) return;
        if (Adopted && !PostgresProcesses.RunsIn(Pid, _dataDir)) return;
        HostProcesses.Signal(Pid, signal);
    }

    private async Task<string> WatchChildAsync(Process process)
    {
        await process.WaitForExitAsync(CancellationToken.None);
        _claim!.Dispose();
        return Describe(process.ExitCode);
    }

    private async Task<string> WatchAdoptedAsync()
    {
        try
        {
            while (PostgresProcesses.RunsIn(Pid, _dataDir))
                await Task.Delay(AdoptedProbeInterval, _disposed.Token);
            return "the adopted postmaster (not this process's child) is gone; its exit status is unknown";
        }
        catch (OperationCanceledException)
        {
            return "no longer watched";
        }
    }

    private async Task PumpAsync(StreamReader reader)
    {
        try
        {
            while (await reader.ReadLineAsync() is { } line)
            {
                lock (_tail)
                {
                    _tail.Enqueue(line);
                    if (_tail.Count > TailLines) _tail.Dequeue();
                }
            }
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException) { }
    }

    /// <summary>.NET reports a process killed by signal N as exit status 128+N.</summary>
    internal static string Describe(int exitStatus) => exitStatus switch
    {
        0 => "exited with status 0",
        > 128 and <= 128 + 64 => $"killed by signal {exitStatus - 128} ({SignalName(exitStatus - 128)})",
        _ => $"exited with status {exitStatus}",
    };

    private static string SignalName(int signal) => signal switch
    {
        1 => "SIGHUP", 2 => "SIGINT", 3 => "SIGQUIT", 4 => "SIGILL", 6 => "SIGABRT", 7 => "SIGBUS", 8 => "SIGFPE",
        9 => "SIGKILL", 11 => "SIGSEGV", 13 => "SIGPIPE", 15 => "SIGTERM", _ => "signal " + signal,
    };

    public void Dispose()
    {
        _disposed.Cancel();
        // A running child stays tracked by .NET (which reaps it and releases its claim in WatchChildAsync).
        if (Exited.IsCompleted) _process?.Dispose();
    }
}
