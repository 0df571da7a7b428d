using BatchRunner.Runtime;
using System.Diagnostics;

namespace BatchRunner.Server.Storage.Embedded;

/// <summary>The embedded cluster as /healthz shows it.</summary>
public enum EmbeddedPostgresState { Starting, Running, Recovering, Restarting, Stopping, Stopped }

/// <summary>A snapshot of the embedded cluster's supervision.</summary>
public sealed record EmbeddedPostgresStatus(
    EmbeddedPostgresState State, int? Pid, bool Adopted, int Restarts, string? LastRestartCause, DateTimeOffset? LastRestartAt, string LogDirectory);

/// <summary>
/// Keeps the embedded cluster's postmaster running: starts it (or adopts the one a crashed BatchRunner
/// left), watches it, and when it dies starts it again with back-off; PostgreSQL's crash recovery then
/// replays the WAL. Every restart is logged with its cause and counted in <see cref="Status"/> (which
/// /healthz and <c>batchrunner_embedded_postgres_restarts_total</c> show).
/// </summary>
/// <remarks>
/// Guarantees:
/// <list type="bullet">
/// <item>Never a second postmaster on a live data directory: while the postmaster named in
/// <c>postmaster.pid</c> runs in the data directory it is adopted; other postgres processes of the
/// directory (backends of a killed postmaster, which may hold its shared memory) are given
/// <see cref="OrphanGrace"/> to exit and then killed before a new postmaster starts.</item>
/// <item>A lock file whose pid now belongs to another process or to the dead postmaster's zombie (PostgreSQL
/// would refuse to start) is removed, and only when no postgres process runs in the data directory.</item>
/// <item>A postmaster this process started is its direct child (no pg_ctl daemon in between), in a session of
/// its own so that a terminal's Ctrl-C or a service manager's signal to our process group reaches only us:
/// we stop it ourselves, after the jobs that write to it.</item>
/// <item>While it is known to be down or replaying its WAL, <see cref="IsRestarting"/> says so, and when it
/// is back <see cref="Restarted"/> fires (connection pools are cleared there).</item>
/// </list>
/// </remarks>
internal sealed partial class PostgresSupervisor : IAsyncDisposable
{
    public static readonly TimeSpan ProbeInterval = TimeSpan.FromSeconds(2);
    public static readonly TimeSpan OrphanGrace = TimeSpan.FromSeconds(5);
    private static readonly TimeSpan FirstStartDeadline = TimeSpan.FromSeconds(60);
    private static readonly TimeSpan ReadyTimeout = TimeSpan.FromMinutes(10);
    private static readonly TimeSpan StopTimeout = TimeSpan.FromSeconds(30);
    private const int SIGINT = HostProcesses.SIGINT, SIGQUIT = HostProcesses.SIGQUIT, SIGKILL = HostProcesses.SIGKILL;

    private readonly string _dataDir;
    private readonly string _socketLock;
    private readonly Func<ProcessStartInfo> _command;
    private readonly PostgresProbe _probe;
    private readonly string _logDirectory;
    private readonly CancellationTokenSource _stop = new();
    private readonly object _gate = new();
    private Postmaster? _current;
    private Task _watch = Task.CompletedTask;
    private Task? _stopping;
    private volatile bool _started, _restarting, _recovering, _stopRequested, _stopped;
    private int _restarts;
    private string? _lastCause;
    private DateTimeOffset? _lastRestartAt;
    private long _backSinceTicks;

    public PostgresSupervisor(string dataDir, string socketLock, string probeConnectionString, Func<ProcessStartInfo> command, ILogger log)
    {
        _dataDir = dataDir;
        _socketLock = socketLock;
        _command = command;
        _probe = new PostgresProbe(probeConnectionString);
        _logDirectory = Path.Combine(dataDir, "log");
        Log = log;
    }

    /// <summary>Where it logs; replaced by the host's logger once the host is built (the boot logger is short-lived).</summary>
    public ILogger Log { get; set; }

    /// <summary>Fires (on a pool thread) each time the cluster accepts connections again after a restart.</summary>
    public event Action? Restarted;

    public bool IsRestarting => _restarting || _recovering;

    public long BackSinceTicks => Interlocked.Read(ref _backSinceTicks);

    public EmbeddedPostgresStatus Status
    {
        get
        {
            var pm = _current;
            var state = _stopped ? EmbeddedPostgresState.Stopped
                : _stopRequested ? EmbeddedPostgresState.Stopping
                : pm is null ? EmbeddedPostgresState.Starting
                : _restarting ? EmbeddedPostgresState.Restarting
                : _recovering ? EmbeddedPostgresState.Recovering
                : EmbeddedPostgresState.Running;
            lock (_gate)
                return new EmbeddedPostgresStatus(state, pm is { HasExited: false } ? pm.Pid : null, pm?.Adopted ?? false,
                    _restarts, _lastCause, _lastRestartAt, _logDirectory);
        }
    }

    /// <summary>Starts or adopts the postmaster (retrying for up to a minute), waits until it accepts connections, then watches it.</summary>
    public async Task StartAsync(CancellationToken ct)
    {
        var backoff = new RestartBackoff();
        var deadline = Stopwatch.StartNew();
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, _stop.Token);
        while (true)
        {
            try
            {
                await BringUpAsync(linked.Token);
                break;
            }
            // A tool that cannot be run at all (Win32Exception: setpriv missing, say) will not appear by waiting.
            catch (Exception e) when (e is not (OperationCanceledException or System.ComponentModel.Win32Exception) && deadline.Elapsed < FirstStartDeadline)
            {
                var delay = backoff.Next();
                LogStartFailed(Log, e.Message, delay.TotalSeconds);
                await Task.Delay(delay, linked.Token);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                throw new InvalidOperationException($"embedded PostgreSQL in {_dataDir} did not start: {e.Message} — see {_logDirectory}", e);
            }
        }
        _started = true;
        _watch = Task.Run(() => WatchAsync(_stop.Token));
    }

    /// <summary>Adopts the running postmaster of the data directory, or starts one, and waits until it accepts connections.</summary>
    private async Task BringUpAsync(CancellationToken ct)
    {
        var running = PostgresProcesses.In(_dataDir);
        var lockPid = PostmasterPidFile.ReadPid(Path.Combine(_dataDir, PostmasterPidFile.DataDirLock));
        if (lockPid is { } pid && running.Contains(pid))
        {
            var adopted = Postmaster.Adopt(pid, _dataDir);
            SetCurrent(adopted);
            CountRestart();
            await WaitReadyAsync(adopted, ct);
            LogAdopted(Log, _dataDir, pid);
            return;
        }
        if (running.Count > 0) await ClearOrphansAsync(ct);
        RemoveStaleLock(Path.Combine(_dataDir, PostmasterPidFile.DataDirLock));
        RemoveStaleLock(_socketLock);

        var sw = Stopwatch.StartNew();
        var started = Postmaster.Launch(_command(), _dataDir);
        SetCurrent(started);
        CountRestart();
        await WaitReadyAsync(started, ct);
        LogStarted(Log, _dataDir, started.Pid, sw.ElapsedMilliseconds);
    }

    /// <summary>Every postmaster started (or adopted) after the first came up counts, also one that then dies in its own recovery.</summary>
    private void CountRestart()
    {
        if (!_started) return;
        lock (_gate) _restarts++;
    }

    private void RecordDeath(string cause)
    {
        lock (_gate)
        {
            _lastCause = cause;
            _lastRestartAt = DateTimeOffset.UtcNow;
        }
    }

    private void SetCurrent(Postmaster pm)
    {
        Postmaster? old;
        lock (_gate)
        {
            old = _current;
            _current = pm;
        }
        if (old is not null && !ReferenceEquals(old, pm)) old.Dispose();
    }

    private async Task WaitReadyAsync(Postmaster pm, CancellationToken ct)
    {
        var sw = Stopwatch.StartNew();
        string? why = "not probed";
        while (sw.Elapsed < ReadyTimeout)
        {
            if (pm.HasExited)
                throw new InvalidOperationException($"postmaster (pid {pm.Pid}) {await pm.Exited}" + (pm.Tail() is { Length: > 0 } t ? ": " + t : ""));
            why = await _probe.WhyNotAcceptingAsync(ct);
            if (why is null) return;
            await Task.WhenAny(pm.Exited, Task.Delay(50, ct));
            ct.ThrowIfCancellationRequested();
        }
        // Crash recovery of a very large WAL could take this long; a postmaster that has not answered for
        // ten minutes is hung: kill it, and the caller starts another (recovery resumes where it was).
        pm.Signal(SIGKILL);
        throw new InvalidOperationException($"postmaster (pid {pm.Pid}) did not accept connections within {ReadyTimeout.TotalMinutes} min: {why}");
    }

    /// <summary>
    /// Postgres processes of the data directory with no live postmaster of it: backends of a postmaster that
    /// was killed. They notice its death and exit by themselves; one still running after the grace (a long
    /// query with no wait point) is killed, since it can only keep the shared memory from being reused.
    /// </summary>
    private async Task ClearOrphansAsync(CancellationToken ct)
    {
        if (await QuietWithinAsync(OrphanGrace, ct)) return;
        var left = PostgresProcesses.In(_dataDir);
        LogKillingOrphans(Log, _dataDir, string.Join(", ", left));
        foreach (var pid in left)
            if (PostgresProcesses.RunsIn(pid, _dataDir)) HostProcesses.Signal(pid, SIGKILL);
        await QuietWithinAsync(TimeSpan.FromSeconds(5), ct);
    }

    /// <summary>Waits until no postgres process runs in the data directory, at most <paramref name="timeout"/>; whether none does.</summary>
    private async Task<bool> QuietWithinAsync(TimeSpan timeout, CancellationToken ct)
    {
        var sw = Stopwatch.StartNew();
        while (PostgresProcesses.In(_dataDir).Count > 0)
        {
            if (sw.Elapsed >= timeout) return false;
            await Task.Delay(50, ct);
        }
        return true;
    }

    /// <summary>
    /// Called when no postgres process runs in the data directory. A lock file whose pid exists is then
    /// another process's number now, or the zombie of the dead postmaster whose parent has not reaped it
    /// yet (an init that reaps slowly): PostgreSQL would take either for a live postmaster and refuse to
    /// start. A lock file whose pid is gone PostgreSQL replaces by itself.
    /// </summary>
    private void RemoveStaleLock(string path)
    {
        if (PostmasterPidFile.ReadPid(path) is not { } pid) return;
        if (Directory.Exists($"/proc/{pid}") && !PostgresProcesses.RunsIn(pid, _dataDir))
        {
            LogStaleLock(Log, path, pid);
            File.Delete(path);
        }
    }

    private async Task WatchAsync(CancellationToken stop)
    {
        var backoff = new RestartBackoff();
        try
        {
            while (true)
            {
                var pm = _current!;
                var up = Stopwatch.StartNew();
                var cause = await WatchOneAsync(pm, stop);
                _restarting = true;
                RecordDeath($"postmaster (pid {pm.Pid}) {cause}");
                LogDied(Log, pm.Pid, cause);
                backoff.Died(up.Elapsed);
                var down = Stopwatch.StartNew();
                while (true)
                {
                    await Task.Delay(backoff.Next(), stop);
                    try
                    {
                        await BringUpAsync(stop);
                        break;
                    }
                    catch (Exception e) when (e is not OperationCanceledException)
                    {
                        RecordDeath(e.Message);
                        LogRestartFailed(Log, e.Message);
                    }
                }
                _recovering = false;
                Interlocked.Exchange(ref _backSinceTicks, Environment.TickCount64);
                _restarting = false;
                LogBack(Log, _current!.Pid, down.ElapsedMilliseconds);
                try { Restarted?.Invoke(); }
                catch (Exception e) { LogRestartedHandlerFailed(Log, e); }
            }
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested) { }
        catch (Exception e)
        {
            // A bug here must not pass silently: without supervision the cluster stays down after its next crash.
            LogSupervisionFailed(Log, e);
        }
    }

    /// <summary>Returns how the postmaster ended; meanwhile probes it every <see cref="ProbeInterval"/>
    /// (alive but not accepting connections: PostgreSQL is replaying its WAL after a backend crashed).</summary>
    private async Task<string> WatchOneAsync(Postmaster pm, CancellationToken stop)
    {
        while (true)
        {
            await Task.WhenAny(pm.Exited, Task.Delay(ProbeInterval, stop));
            stop.ThrowIfCancellationRequested();
            if (pm.HasExited) return await pm.Exited;
            var why = await _probe.WhyNotAcceptingAsync(stop);
            if (pm.HasExited) return await pm.Exited;
            var recovering = why is not null;
            if (recovering != _recovering)
            {
                _recovering = recovering;
                if (recovering) LogNotAccepting(Log, pm.Pid, why!);
                else LogAcceptingAgain(Log, pm.Pid);
                if (!recovering) Interlocked.Exchange(ref _backSinceTicks, Environment.TickCount64);
            }
        }
    }

    /// <summary>Stops supervising, then shuts the postmaster down (fast: sessions ended, checkpoint written).</summary>
    public Task StopAsync()
    {
        lock (_gate) return _stopping ??= StopCoreAsync();
    }

    private async Task StopCoreAsync()
    {
        _stopRequested = true;
        await _stop.CancelAsync();
        await _watch;
        var pm = _current;
        if (pm is not null && !pm.HasExited)
        {
            pm.Signal(SIGINT);
            if (!await ExitedWithinAsync(pm, StopTimeout))
            {
                LogStopEscalated(Log, pm.Pid);
                pm.Signal(SIGQUIT);
                if (!await ExitedWithinAsync(pm, TimeSpan.FromSeconds(5))) pm.Signal(SIGKILL);
                await ExitedWithinAsync(pm, TimeSpan.FromSeconds(5));
            }
        }
        // The logger process outlives the postmaster by a moment (it writes the shutdown's last lines): stopped means that
        // nothing of the cluster runs in its data directory any more, so wait for it too (a backup or a new start may follow).
        await QuietWithinAsync(TimeSpan.FromSeconds(5), CancellationToken.None);
        pm?.Dispose();
        await _probe.DisposeAsync();
        _stopped = true;
        LogStopped(Log, _dataDir);
    }

    private static async Task<bool> ExitedWithinAsync(Postmaster pm, TimeSpan timeout) =>
        await Task.WhenAny(pm.Exited, Task.Delay(timeout)) == pm.Exited;

    public ValueTask DisposeAsync() => new(StopAsync());

    [LoggerMessage(Level = LogLevel.Information, Message = "Embedded PostgreSQL started in {DataDir} (pid {Pid}, {ElapsedMs} ms)")]
    private static partial void LogStarted(ILogger log, string dataDir, int pid, long elapsedMs);

    [LoggerMessage(Level = LogLevel.Information, Message = "Embedded PostgreSQL in {DataDir} was already running (pid {Pid}); adopted it")]
    private static partial void LogAdopted(ILogger log, string dataDir, int pid);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Embedded PostgreSQL did not start: {Reason}; trying again in {Seconds}s")]
    private static partial void LogStartFailed(ILogger log, string reason, double seconds);

    [LoggerMessage(Level = LogLevel.Error, Message = "Embedded PostgreSQL postmaster (pid {Pid}) {Cause}; starting it again")]
    private static partial void LogDied(ILogger log, int pid, string cause);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Embedded PostgreSQL restart failed: {Reason}")]
    private static partial void LogRestartFailed(ILogger log, string reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "Embedded PostgreSQL accepts connections again (pid {Pid}), {ElapsedMs} ms after its postmaster died")]
    private static partial void LogBack(ILogger log, int pid, long elapsedMs);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Embedded PostgreSQL (pid {Pid}) runs but does not accept connections: {Reason}")]
    private static partial void LogNotAccepting(ILogger log, int pid, string reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "Embedded PostgreSQL (pid {Pid}) accepts connections again")]
    private static partial void LogAcceptingAgain(ILogger log, int pid);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Embedded PostgreSQL in {DataDir}: killing postgres processes of a dead postmaster that did not exit: {Pids}")]
    private static partial void LogKillingOrphans(ILogger log, string dataDir, string pids);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Removing stale PostgreSQL lock file {Path}: its pid {Pid} is not a live postgres process of this cluster")]
    private static partial void LogStaleLock(ILogger log, string path, int pid);

    [LoggerMessage(Level = LogLevel.Critical, Message = "Supervision of the embedded PostgreSQL ended unexpectedly: it will not be restarted if it dies")]
    private static partial void LogSupervisionFailed(ILogger log, Exception e);

    [LoggerMessage(Level = LogLevel.Error, Message = "A handler of the embedded PostgreSQL's restart failed")]
    private static partial void LogRestartedHandlerFailed(ILogger log, Exception e);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Embedded PostgreSQL (pid {Pid}) did not stop within 30 s; immediate shutdown")]
    private static partial void LogStopEscalated(ILogger log, int pid);

    [LoggerMessage(Level = LogLevel.Information, Message = "Embedded PostgreSQL in {DataDir} stopped")]
    private static partial void LogStopped(ILogger log, string dataDir);
}
