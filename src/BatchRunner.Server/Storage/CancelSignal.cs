using Npgsql;

namespace BatchRunner.Server.Storage;

/// <summary>
/// Wakes a starting or running attempt the moment its job's cancel is requested, on whichever node the request was made:
/// one connection per worker process LISTENs on the channel the database NOTIFYs when a job's cancel flag is set
/// (migration 0096's trigger, so every path that sets the flag signals). So no running job polls for its cancel: Hangfire's
/// cancellation check and the container's flag poll are only long safety nets.
/// </summary>
/// <remarks>
/// <para>Only a hint: the woken attempt reads the flag again (<c>StopSignals.CauseAsync</c>), and a notification for a job
/// this node does not run is dropped. What it guarantees: a cancel committed while this process listens reaches the job's
/// watch within the notification's delivery (milliseconds), also when the cancel came just before the watch began (the
/// ids notified in the last <see cref="RecentWindow"/> are kept for that); and when the connection was lost (the database
/// restarted, the embedded cluster was restarted by its supervisor), it listens again within
/// <see cref="ReconnectDelay"/> of the database taking connections and then reads the flags of every job it watches once,
/// so that a cancel made while it was away is not missed either.</para>
/// <para>The connection is its own, from <see cref="SessionConnections"/> (a LISTEN must not go back to a pool, and a
/// closed one must really close), with no timeout on its wait: it costs nothing while nothing is cancelled.</para>
/// </remarks>
public sealed partial class CancelSignal : BackgroundService
{
    /// <summary>The channel of migration 0096's trigger; the payload is the job's id.</summary>
    public const string Channel = "batchrunner_cancel";

    /// <summary>The listening connection's application_name.</summary>
    public const string ApplicationName = "batchrunner cancel signal";

    /// <summary>How long after a notification a watch that begins still fires: the attempt's watch begins just after its
    /// BeginAttempt, so a cancel between the two is seen.</summary>
    public static readonly TimeSpan RecentWindow = TimeSpan.FromMinutes(1);

    /// <summary>Between tries to listen again while the database is away.</summary>
    public static readonly TimeSpan ReconnectDelay = TimeSpan.FromMilliseconds(500);

    private readonly SessionConnections _sessions;
    private readonly TimeProvider _time;
    private readonly ILogger<CancelSignal> _log;
    private readonly object _gate = new();
    private readonly Dictionary<Guid, List<Watch>> _watched = [];
    private readonly Dictionary<Guid, long> _recent = [];
    private readonly TaskCompletionSource _listening = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <param name="sessions">Where its listening connection comes from: unpooled, with keepalives over TCP.</param>
    public CancelSignal(SessionConnections sessions, TimeProvider time, ILogger<CancelSignal> log)
    {
        _sessions = sessions;
        _time = time;
        _log = log;
    }

    /// <summary>Completes once the first LISTEN is in place (tests wait for it).</summary>
    public Task Listening => _listening.Task;

    /// <summary>How many times it has (re)started listening: 1 after the first, one more after each lost connection.</summary>
    public int Listens { get; private set; }

    /// <summary>
    /// Watches job <paramref name="jobId"/> until disposed: its token fires when the job's cancel is requested (or was, in
    /// the last <see cref="RecentWindow"/>). Dispose it when the attempt ends.
    /// </summary>
    public Watch WatchJob(Guid jobId)
    {
        var watch = new Watch(this, jobId);
        lock (_gate)
        {
            if (!_watched.TryGetValue(jobId, out var list)) _watched[jobId] = list = [];
            list.Add(watch);
            if (_recent.ContainsKey(jobId)) watch.Fire();
        }
        return watch;
    }

    private void Unwatch(Watch watch)
    {
        lock (_gate)
        {
            if (!_watched.TryGetValue(watch.JobId, out var list)) return;
            list.Remove(watch);
            if (list.Count == 0) _watched.Remove(watch.JobId);
        }
    }

    /// <summary>A cancel of <paramref name="jobId"/> was requested: fires its watches, and remembers it for a watch about to begin.</summary>
    internal void Signal(Guid jobId)
    {
        var now = _time.GetTimestamp();
        List<Watch>? fire = null;
        lock (_gate)
        {
            foreach (var old in _recent.Where(r => _time.GetElapsedTime(r.Value, now) > RecentWindow).Select(r => r.Key).ToList()) _recent.Remove(old);
            _recent[jobId] = now;
            if (_watched.TryGetValue(jobId, out var list)) fire = [.. list];
        }
        if (fire is null) return;
        LogSignalled(_log, jobId);
        foreach (var w in fire) w.Fire();
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var away = false;
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await using var conn = await _sessions.ListenAsync(ApplicationName, Channel, Signal, stoppingToken);
                Listens++;
                // Listening from here on; a cancel made before this (while the connection was away, or before the first
                // LISTEN of a worker that already runs jobs) is in the flags.
                await CatchUpAsync(conn, stoppingToken);
                _listening.TrySetResult();
                away = false;
                LogListening(_log, Listens);
                while (true) await conn.WaitAsync(stoppingToken);
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested) { return; }
            catch (Exception e) when (!stoppingToken.IsCancellationRequested)
            {
                // The database went away (or restarts): the safety-net polls carry on meanwhile; listen again shortly.
                if (!away) LogLost(_log, e.Message);
                away = true;
                try { await Task.Delay(ReconnectDelay, _time, stoppingToken); } catch (OperationCanceledException) { return; }
            }
        }
    }

    /// <summary>After listening again: one read of the cancel flags of the jobs watched here.</summary>
    private async Task CatchUpAsync(NpgsqlConnection conn, CancellationToken ct)
    {
        Guid[] ids;
        lock (_gate) ids = [.. _watched.Keys];
        if (ids.Length == 0) return;
        await using var cmd = new NpgsqlCommand("select id from batchrunner.jobs where id = any(@ids) and cancel_requested", conn);
        cmd.Parameters.AddWithValue("ids", ids);
        var cancelled = new List<Guid>();
        await using (var rd = await cmd.ExecuteReaderAsync(ct))
            while (await rd.ReadAsync(ct)) cancelled.Add(rd.GetGuid(0));
        foreach (var id in cancelled) Signal(id);
    }

    /// <summary>One attempt's watch of its job: <see cref="Token"/> fires on a cancel request.</summary>
    public sealed class Watch : IDisposable
    {
        private readonly CancelSignal _owner;
        private readonly CancellationTokenSource _fired = new();

        internal Watch(CancelSignal owner, Guid jobId)
        {
            _owner = owner;
            JobId = jobId;
        }

        public Guid JobId { get; }

        public CancellationToken Token => _fired.Token;

        internal void Fire()
        {
            try { _fired.Cancel(); }
            catch (ObjectDisposedException) { }
        }

        public void Dispose()
        {
            _owner.Unwatch(this);
            _fired.Dispose();
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Job {JobId}: cancel requested (notified)")]
    private static partial void LogSignalled(ILogger log, Guid jobId);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Listening for cancels (connection {Count})")]
    private static partial void LogListening(ILogger log, int count);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Cancel notifications: no connection ({Reason}); listening again once the database answers")]
    private static partial void LogLost(ILogger log, string reason);
}
