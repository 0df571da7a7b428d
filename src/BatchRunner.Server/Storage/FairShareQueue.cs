using Hangfire.PostgreSql;
using Hangfire.Storage;
using Npgsql;

namespace BatchRunner.Server.Storage;

/// <summary>
/// What <see cref="FairShareQueue"/> asks the scheduler (Scheduling/FairShare): when this process may fetch, which
/// Hangfire queues to take from first, and which messages to leave for now.
/// </summary>
public interface IFetchPolicy
{
    /// <summary>Blocks until this process may fetch. The turn is held until the fetched job's admission is over
    /// (<see cref="FetchTurn.Dispose"/>), so that one job at a time is fetched and admitted per process.</summary>
    FetchTurn WaitForTurn(CancellationToken ct);

    /// <summary>The Hangfire queues to take from, best first, for the worker's BatchRunner queues (highest priority first).</summary>
    IReadOnlyList<string> Order(IReadOnlyList<string> queues);

    /// <summary>Hangfire job ids not to fetch now (they did not fit this node at their last try).</summary>
    long[] Skipped();
}

/// <summary>
/// A process's turn to fetch and admit one job (<see cref="IFetchPolicy.WaitForTurn"/>). The fetch hands it to the job
/// it fetched (<see cref="TakeCurrent"/> in the performer); whoever ends the admission disposes it, and the fetched
/// message's end disposes it too, so a message that Hangfire never performs (deleted meanwhile) cannot keep it.
/// Idempotent.
/// </summary>
public sealed class FetchTurn(Action release, Action<string> skip) : IDisposable
{
    // Set by the fetch on the worker's thread; flows into the job method that Hangfire then invokes there.
    private static readonly AsyncLocal<FetchTurn?> Current = new();
    private int _released;

    /// <summary>The Hangfire job id of the message fetched in this turn.</summary>
    public string? HangfireJobId { get; private set; }

    /// <summary>The turn of the message this worker fetched last, once (null when there is none, or it was taken).</summary>
    public static FetchTurn? TakeCurrent()
    {
        var turn = Current.Value;
        Current.Value = null;
        return turn;
    }

    internal void Fetched(string hangfireJobId)
    {
        HangfireJobId = hangfireJobId;
        Current.Value = this;
    }

    /// <summary>The fetched job does not fit this node now: leave its message to others until capacity changes here.</summary>
    public void NotNow()
    {
        if (HangfireJobId is { } id) skip(id);
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _released, 1) == 0) release();
    }
}

/// <summary>
/// Hangfire.PostgreSql's queue for the worker's BatchRunner queues, registered for their names: fetches in the order
/// <see cref="IFetchPolicy"/> gives (queue priority, then the tenant furthest below its share), one fetch at a time per
/// process. Enqueueing, acknowledging, requeueing and the dashboard's counts are Hangfire.PostgreSql's own.
/// </summary>
/// <remarks>
/// Hangfire.PostgreSql fetches with <c>ORDER BY fetchedat NULLS FIRST, queue, jobid</c>: by queue <em>name</em>, not by
/// the order of the worker's queues, and each waiting worker holds a LISTEN connection and polls. Here the order is ours
/// (<c>unnest … with ordinality</c>, the head of each queue by index), only the process's one fetching worker polls (every
/// second), and one shared LISTEN on Hangfire's <c>new_job</c> channel wakes it at once. A message is taken with
/// <c>FOR UPDATE SKIP LOCKED</c> and marked fetched as Hangfire.PostgreSql does, and handed to its own
/// <see cref="PostgreSqlFetchedJob"/> (keep-alive under the sliding invisibility timeout, remove, requeue).
/// </remarks>
public sealed class FairShareQueueProvider : IPersistentJobQueueProvider, IDisposable
{
    private static readonly TimeSpan PollInterval = TimeSpan.FromSeconds(1);

    private readonly PostgreSqlStorage _storage;
    private readonly PostgreSqlStorageOptions _options;
    private readonly PostgreSqlJobQueueProvider _default;
    private readonly NpgsqlDataSource _db;
    private readonly SessionConnections _sessions;
    private readonly IFetchPolicy _policy;
    private readonly AutoResetEvent _notified = new(false);
    private readonly CancellationTokenSource _stop = new();
    private readonly string _fetchSql;
    private Task? _listener;

    public FairShareQueueProvider(PostgreSqlStorage storage, PostgreSqlStorageOptions options, NpgsqlDataSource db, SessionConnections sessions, IFetchPolicy policy)
    {
        _sessions = sessions;
        _storage = storage;
        _options = options;
        _default = new PostgreSqlJobQueueProvider(storage, options);
        _db = db;
        _policy = policy;
        var schema = options.SchemaName;
        // The head of each queue (index on queue, fetchedat, jobid), then the first by the policy's order. A message fetched
        // longer ago than the invisibility timeout counts as not fetched (its worker is gone), as in Hangfire.PostgreSql.
        _fetchSql = $"""
            update "{schema}".jobqueue set fetchedat = now()
             where id = (
                select h.id from unnest(@queues::text[]) with ordinality as o(queue, rank)
                cross join lateral (
                    select q.id, q.jobid from "{schema}".jobqueue q
                     where q.queue = o.queue and (q.fetchedat is null or q.fetchedat < now() - @invisible)
                       and q.jobid <> all(@skip)
                     order by q.fetchedat nulls first, q.jobid
                     limit 1 for update skip locked) h
                 order by o.rank, h.jobid
                 limit 1)
            returning id, jobid, queue, fetchedat
            """;
    }

    public IPersistentJobQueue GetJobQueue() => new Queue(this, _default.GetJobQueue());

    /// <summary>The default provider's counts; no queue names of its own, so that the dashboard lists each queue once.</summary>
    public IPersistentJobQueueMonitoringApi GetJobQueueMonitoringApi() => new Monitoring(_default.GetJobQueueMonitoringApi());

    private IFetchedJob Dequeue(string[] queues, CancellationToken ct)
    {
        EnsureListening();
        var turn = _policy.WaitForTurn(ct);
        try
        {
            while (true)
            {
                ct.ThrowIfCancellationRequested();
                if (TryFetch(_policy.Order(queues), _policy.Skipped()) is { } fetched)
                {
                    turn.Fetched(fetched.JobId);
                    return new TurnFetchedJob(fetched, turn);
                }
                WaitHandle.WaitAny([_notified, ct.WaitHandle], PollInterval);
            }
        }
        catch
        {
            turn.Dispose();
            throw;
        }
    }

    private PostgreSqlFetchedJob? TryFetch(IReadOnlyList<string> queues, long[] skip)
    {
        using var cmd = _db.CreateCommand(_fetchSql);
        cmd.Parameters.AddWithValue("queues", queues.ToArray());
        cmd.Parameters.AddWithValue("invisible", _options.InvisibilityTimeout);
        cmd.Parameters.AddWithValue("skip", skip);
        using var rd = cmd.ExecuteReader();
        if (!rd.Read()) return null;
        return new PostgreSqlFetchedJob(_storage, rd.GetInt64(0), rd.GetInt64(1).ToString(System.Globalization.CultureInfo.InvariantCulture),
            rd.GetString(2), rd.GetDateTime(3));
    }

    /// <summary>One LISTEN per process on the channel Hangfire.PostgreSql notifies on each enqueue (EnableLongPolling).</summary>
    private void EnsureListening()
    {
        if (_listener is not null) return;
        lock (_notified)
        {
            _listener ??= Task.Run(async () =>
            {
                while (!_stop.IsCancellationRequested)
                {
                    try
                    {
                        // Unpooled: the LISTEN ends with the connection instead of going back to the pool with it.
                        await using var conn = await _sessions.OpenAsync(_stop.Token);
                        conn.Notification += (_, _) => _notified.Set();
                        await using (var listen = new NpgsqlCommand("LISTEN new_job", conn)) await listen.ExecuteNonQueryAsync(_stop.Token);
                        while (true) await conn.WaitAsync(_stop.Token);
                    }
                    catch (OperationCanceledException) when (_stop.IsCancellationRequested) { return; }
                    catch (Exception) when (!_stop.IsCancellationRequested)
                    {
                        // The database went away: the one second poll carries on meanwhile; listen again shortly.
                        try { await Task.Delay(TimeSpan.FromSeconds(1), _stop.Token); } catch (OperationCanceledException) { return; }
                    }
                }
            });
        }
    }

    public void Dispose()
    {
        _stop.Cancel();
        try { _listener?.Wait(TimeSpan.FromSeconds(5)); } catch (AggregateException) { }
        _stop.Dispose();
        _notified.Dispose();
    }

    private sealed class Queue(FairShareQueueProvider provider, IPersistentJobQueue inner) : IPersistentJobQueue
    {
        public IFetchedJob Dequeue(string[] queues, CancellationToken cancellationToken) => provider.Dequeue(queues, cancellationToken);

        public void Enqueue(System.Data.IDbConnection connection, string queue, string jobId) => inner.Enqueue(connection, queue, jobId);
    }

    /// <summary>The fetched message, and the turn it ends when Hangfire is done with it (performed or not).</summary>
    private sealed class TurnFetchedJob(PostgreSqlFetchedJob inner, FetchTurn turn) : IFetchedJob
    {
        public string JobId => inner.JobId;

        public void RemoveFromQueue() => inner.RemoveFromQueue();

        public void Requeue() => inner.Requeue();

        public void Dispose()
        {
            try { inner.Dispose(); }
            finally { turn.Dispose(); }
        }
    }

    private sealed class Monitoring(IPersistentJobQueueMonitoringApi inner) : IPersistentJobQueueMonitoringApi
    {
        public IEnumerable<string> GetQueues() => [];

        public IEnumerable<long> GetEnqueuedJobIds(string queue, int from, int perPage) => inner.GetEnqueuedJobIds(queue, from, perPage);

        public IEnumerable<long> GetFetchedJobIds(string queue, int from, int perPage) => inner.GetFetchedJobIds(queue, from, perPage);

        public EnqueuedAndFetchedCountDto GetEnqueuedAndFetchedCount(string queue) => inner.GetEnqueuedAndFetchedCount(queue);
    }
}
