namespace BatchRunner.Server.Storage;

/// <summary>
/// Wakes the API requests that wait for a job's state to change (<c>GET /api/v1/jobs/{id}?waitSeconds=</c>) the moment
/// it changes, on whichever node the change was made: while at least one request waits, one connection of this process
/// LISTENs on the channel the database NOTIFYs on every state change (migration 0100's trigger).
/// </summary>
/// <remarks>
/// <para>Only a hint: a woken request reads the job again, and every waiting request also reads it every
/// <see cref="SafetyPollInterval"/>. What it guarantees: once <see cref="ListeningAsync"/> completed, a change committed
/// afterwards reaches the job's <see cref="Waiter"/> within the notification's delivery (milliseconds); so a request that
/// waits for listening, then reads the job, then waits misses no change. When the connection is lost (the database
/// restarted) it listens again within <see cref="ReconnectDelay"/> of the database taking connections and wakes every
/// waiter once, so that a change made while it was away is read at once.</para>
/// <para>It listens only while someone waits, and closes its connection <see cref="DefaultIdleClose"/> after the last waiter
/// left: notifications (three per job) cost nothing in a process that does not listen.</para>
/// </remarks>
public sealed partial class JobStateSignal : BackgroundService
{
    /// <summary>The channel of migration 0100's trigger; the payload is the job's id.</summary>
    public const string Channel = "batchrunner_job_state";

    /// <summary>The listening connection's application_name.</summary>
    public const string ApplicationName = "batchrunner job state signal";

    /// <summary>How long the connection stays listening after the last waiter left, by default (a client's next wait is usually soon).</summary>
    public static readonly TimeSpan DefaultIdleClose = TimeSpan.FromSeconds(30);

    /// <summary>How often a listening connection looks whether anyone still waits.</summary>
    private static readonly TimeSpan IdleCheck = TimeSpan.FromSeconds(1);

    /// <summary>Between tries to listen again while the database is away.</summary>
    public static readonly TimeSpan ReconnectDelay = TimeSpan.FromMilliseconds(500);

    /// <summary>A waiting request reads its job at least this often, notification or not.</summary>
    public static readonly TimeSpan SafetyPollInterval = TimeSpan.FromSeconds(5);

    private readonly SessionConnections _sessions;
    private readonly TimeProvider _time;
    private readonly ILogger<JobStateSignal> _log;
    private readonly TimeSpan _idleClose;
    private readonly object _gate = new();
    private readonly Dictionary<Guid, List<Waiter>> _waiting = [];
    private readonly SemaphoreSlim _demand = new(0, 1);
    private int _waiters;
    private TaskCompletionSource _listening = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <param name="sessions">Where its listening connection comes from: unpooled, with keepalives over TCP.</param>
    /// <param name="idleClose">How long it listens on after the last waiter left (<see cref="DefaultIdleClose"/>).</param>
    public JobStateSignal(SessionConnections sessions, TimeProvider time, ILogger<JobStateSignal> log, TimeSpan? idleClose = null)
    {
        _sessions = sessions;
        _time = time;
        _log = log;
        _idleClose = idleClose ?? DefaultIdleClose;
    }

    /// <summary>How many times it has (re)started listening.</summary>
    public int Listens { get; private set; }

    /// <summary>Whether a connection is listening now.</summary>
    public bool IsListening
    {
        get { lock (_gate) return _listening.Task.IsCompleted; }
    }

    /// <summary>Waits for job <paramref name="jobId"/>'s state changes until disposed. Start listening if nobody did.</summary>
    public Waiter Watch(Guid jobId)
    {
        var waiter = new Waiter(this, jobId);
        lock (_gate)
        {
            if (!_waiting.TryGetValue(jobId, out var list)) _waiting[jobId] = list = [];
            list.Add(waiter);
            _waiters++;
        }
        PendingPulse.Release(_demand);
        return waiter;
    }

    /// <summary>True once changes committed from now on are delivered; false when that did not happen within
    /// <paramref name="timeout"/> (the database is away: the waiter then relies on its safety polls).</summary>
    public async Task<bool> ListeningAsync(TimeSpan timeout, CancellationToken ct)
    {
        Task listening;
        lock (_gate) listening = _listening.Task;
        if (listening.IsCompleted) return true;
        try
        {
            await listening.WaitAsync(timeout, _time, ct);
            return true;
        }
        catch (TimeoutException) { return false; }
    }

    private void Unwatch(Waiter waiter)
    {
        lock (_gate)
        {
            if (!_waiting.TryGetValue(waiter.JobId, out var list) || !list.Remove(waiter)) return;
            _waiters--;
            if (list.Count == 0) _waiting.Remove(waiter.JobId);
        }
    }

    /// <summary>Job <paramref name="jobId"/>'s state changed: wakes its waiters.</summary>
    internal void Signal(Guid jobId)
    {
        Waiter[]? wake = null;
        lock (_gate)
            if (_waiting.TryGetValue(jobId, out var list)) wake = [.. list];
        if (wake is null) return;
        foreach (var w in wake) w.Pulse();
    }

    private void SignalAll()
    {
        Waiter[] wake;
        lock (_gate) wake = [.. _waiting.Values.SelectMany(l => l)];
        foreach (var w in wake) w.Pulse();
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var away = false;
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                while (Volatile.Read(ref _waiters) == 0) await _demand.WaitAsync(stoppingToken);
                await using var conn = await _sessions.ListenAsync(ApplicationName, Channel, Signal, stoppingToken);
                Listens++;
                lock (_gate) _listening.TrySetResult();
                away = false;
                LogListening(_log, Listens);
                // A change made before this (while the connection was away) is in the rows: every waiter reads its job again.
                SignalAll();
                long? idleSince = null;
                while (true)
                {
                    await conn.WaitAsync(_idleClose < IdleCheck ? _idleClose : IdleCheck, stoppingToken);
                    lock (_gate)
                    {
                        if (_waiters > 0) { idleSince = null; continue; }
                        idleSince ??= _time.GetTimestamp();
                        if (_time.GetElapsedTime(idleSince.Value) < _idleClose) continue;
                        // Decided under the lock: a waiter that comes now finds it not listening and waits for the next LISTEN.
                        _listening = new(TaskCreationOptions.RunContinuationsAsynchronously);
                    }
                    LogIdle(_log);
                    break;
                }
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested) { return; }
            catch (Exception e) when (!stoppingToken.IsCancellationRequested)
            {
                lock (_gate)
                    if (_listening.Task.IsCompleted) _listening = new(TaskCreationOptions.RunContinuationsAsynchronously);
                // The database went away (or restarts): waiters read their jobs at their safety polls meanwhile.
                if (!away) LogLost(_log, e.Message);
                away = true;
                try { await Task.Delay(ReconnectDelay, _time, stoppingToken); } catch (OperationCanceledException) { return; }
            }
        }
    }

    /// <summary>One request's wait for one job's state changes.</summary>
    public sealed class Waiter : IDisposable
    {
        private readonly JobStateSignal _owner;
        private readonly SemaphoreSlim _pulses = new(0, 1);

        internal Waiter(JobStateSignal owner, Guid jobId)
        {
            _owner = owner;
            JobId = jobId;
        }

        public Guid JobId { get; }

        internal void Pulse()
        {
            // At most one pending pulse: several changes while the request reads need one more read, not several.
            try { PendingPulse.Release(_pulses); }
            catch (ObjectDisposedException) { }
        }

        /// <summary>True when the job's state changed (or may have) since the last wait; false after <paramref name="timeout"/>.</summary>
        public Task<bool> WaitAsync(TimeSpan timeout, CancellationToken ct) => _pulses.WaitAsync(timeout, ct);

        public void Dispose()
        {
            _owner.Unwatch(this);
            _pulses.Dispose();
        }
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "Listening for job state changes (connection {Count})")]
    private static partial void LogListening(ILogger log, int count);

    [LoggerMessage(Level = LogLevel.Debug, Message = "No request waits for a job state: stopped listening")]
    private static partial void LogIdle(ILogger log);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Job state notifications: no connection ({Reason}); listening again once the database answers")]
    private static partial void LogLost(ILogger log, string reason);
}
