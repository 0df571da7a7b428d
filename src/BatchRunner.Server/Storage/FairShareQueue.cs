using System.Data;
using System.Reflection;
using Hangfire.PostgreSql;
using Hangfire.Storage;
using Npgsql;

namespace BatchRunner.Server.Storage;

/// <summary>
/// What <see cref="FairShareQueueProvider"/> asks the scheduler (Scheduling/FairShare): when this process may fetch, which
/// Hangfire queues to take from first, and which messages to leave for now.
/// </summary>
public interface IFetchPolicy
{
    /// <summary>Blocks until this process may fetch: one turn fetches at a time, and a turn is held until the fetched
    /// job's admission is over (<see cref="FetchTurn.Dispose"/>); <see cref="FetchTurn.Fetched"/> lets the next turn fetch.</summary>
    FetchTurn WaitForTurn(CancellationToken ct);

    /// <summary>The Hangfire queues to take from, best first, for the worker's BatchRunner queues (highest priority first).</summary>
    IReadOnlyList<string> Order(IReadOnlyList<string> queues);

    /// <summary>Hangfire job ids not to fetch now (they did not fit this node at their last try).</summary>
    long[] Skipped();
}

/// <summary>A message fetched, with the BatchRunner job it delivers as the fetch read it (null and zero when it names none:
/// a schedule's firing, or a job deleted meanwhile).</summary>
/// <param name="Job">The job as <see cref="JobStore.GetForAttemptAsync"/> reads it, read by the fetch (null: none, or
/// not read).</param>
public sealed record FetchedMessage(string HangfireJobId, string Queue, Guid? JobId, string? Tenant, double Cpus, long MemoryBytes, int Gpus, long DiskBytes = 0,
    JobRecord? Job = null);

/// <summary>
/// A process's turn to fetch and admit one job (<see cref="IFetchPolicy.WaitForTurn"/>). The fetch hands it to the job
/// it fetched (<see cref="TakeCurrent"/> in the performer); whoever ends the admission disposes it, and the fetched
/// message's end disposes it too, so a message that Hangfire never performs (deleted meanwhile) cannot keep it.
/// Idempotent.
/// </summary>
public sealed class FetchTurn(Action<FetchedMessage> fetched, Action release, Action<string> skip) : IDisposable
{
    // Set by the fetch on the worker's thread; flows into the job method that Hangfire then invokes there.
    private static readonly AsyncLocal<FetchTurn?> Current = new();
    private int _released;

    /// <summary>The Hangfire job id of the message fetched in this turn.</summary>
    public string? HangfireJobId { get; private set; }

    /// <summary>
    /// The job the message fetched in this turn delivers, as the fetch read it (<see cref="JobStore.GetForAttemptAsync"/>'s
    /// columns, in the fetch's round trip): what the executor decides on instead of reading it again. Read before Hangfire's
    /// Processing change: every decision taken on it that matters is fenced again by the attempt's begin, which starts
    /// only a queued job with no cancel asked for, and its spec never changes once submitted.
    /// </summary>
    public JobRecord? FetchedJob { get; private set; }

    /// <summary>The turn of the message this worker fetched last, once (null when there is none, or it was taken).</summary>
    public static FetchTurn? TakeCurrent()
    {
        var turn = Current.Value;
        Current.Value = null;
        return turn;
    }

    /// <summary>The fetch took <paramref name="message"/> in this turn: the policy counts it, and the next turn may fetch.</summary>
    internal void Fetched(FetchedMessage message)
    {
        HangfireJobId = message.HangfireJobId;
        FetchedJob = message.Job;
        Current.Value = this;
        fetched(message);
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
/// process (up to <c>FairShare.ConcurrentTurns</c> fetched jobs on their way to their begin). Enqueueing, acknowledging, requeueing and the dashboard's counts are Hangfire.PostgreSql's own.
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
    private readonly TenantChanges _tenants;
    private readonly AutoResetEvent _notified = new(false);
    private readonly CancellationTokenSource _stop = new();
    private readonly string _fetchSql;
    private readonly string _anySql;
    private Task? _listener;

    /// <param name="tenants">Where the LISTEN connection reports tenants made or removed (null: nowhere).</param>
    public FairShareQueueProvider(PostgreSqlStorage storage, PostgreSqlStorageOptions options, NpgsqlDataSource db, SessionConnections sessions, IFetchPolicy policy,
        TenantChanges? tenants = null)
    {
        _tenants = tenants ?? new TenantChanges();
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
            with f as (
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
                returning id, jobid, queue, fetchedat)
            select {JobStore.ForAttemptColumns},
                   f.id, f.jobid, f.queue, f.fetchedat,
                   coalesce((j.spec->'resources'->>'cpus')::float8, 0), coalesce((j.spec->'resources'->>'memoryBytes')::int8, 0),
                   coalesce((j.spec->'resources'->>'gpus')::int4, 0), coalesce((j.spec->'resources'->>'diskBytes')::int8, 0)
              from f
              left join "{schema}".job m on m.id = f.jobid
              left join batchrunner.jobs j on j.id = {JobIdArgument}
              {JobStore.NotificationJoin}
            """;
        // Anything this process could fetch now, for the idle poll: the queues of the last order (a new tenant's first
        // message notifies, which decides anew), without computing the order.
        _anySql = $"""
            select exists (select 1 from "{schema}".jobqueue q
                            where q.queue = any(@queues) and (q.fetchedat is null or q.fetchedat < now() - @invisible)
                              and q.jobid <> all(@skip))
            """;
    }

    /// <summary>
    /// The BatchRunner job a message delivers: the performer's first argument (<c>RunAsync(Guid jobId, …)</c>), which
    /// Hangfire stores as a JSON string in a JSON array. Null for any other first argument (a schedule's firing names its
    /// schedule, whose id matches no job; anything else is not a uuid and is not cast).
    /// </summary>
    private const string JobIdArgument =
        "case when m.arguments->>0 ~ '^\"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\"$' " +
        "then ((m.arguments->>0)::jsonb #>> '{}')::uuid end";

    public IPersistentJobQueue GetJobQueue() => new Queue(this, _default.GetJobQueue());

    /// <summary>The default provider's counts; no queue names of its own, so that the dashboard lists each queue once.</summary>
    public IPersistentJobQueueMonitoringApi GetJobQueueMonitoringApi() => new Monitoring(_default.GetJobQueueMonitoringApi());

    private IFetchedJob Dequeue(string[] queues, CancellationToken ct)
    {
        EnsureListening();
        var turn = _policy.WaitForTurn(ct);
        try
        {
            // The order (a read of every tenant's running sums) is computed for a real fetch only: at once, on a
            // notification, and when the cheap look at the last order's queues finds a message; the poll in between is
            // that one look, so an idle node costs one small statement a second.
            string[]? lastOrder = null;
            var decide = true;
            while (true)
            {
                ct.ThrowIfCancellationRequested();
                if (decide || lastOrder is null || AnyToFetch(lastOrder, _policy.Skipped()))
                {
                    var order = _policy.Order(queues);
                    lastOrder = [.. order];
                    if (TryFetch(order, _policy.Skipped()) is { } fetched)
                    {
                        turn.Fetched(fetched.Message);
                        return new TurnFetchedJob(fetched.Job, turn, _options.SchemaName);
                    }
                }
                decide = WaitHandle.WaitAny([_notified, ct.WaitHandle], PollInterval) == 0;
            }
        }
        catch
        {
            turn.Dispose();
            throw;
        }
    }

    private bool AnyToFetch(string[] queues, long[] skip)
    {
        using var cmd = _db.CreateCommand(_anySql);
        cmd.Parameters.AddWithValue("queues", queues);
        cmd.Parameters.AddWithValue("invisible", _options.InvisibilityTimeout);
        cmd.Parameters.AddWithValue("skip", skip);
        return (bool)cmd.ExecuteScalar()!;
    }

    private (PostgreSqlFetchedJob Job, FetchedMessage Message)? TryFetch(IReadOnlyList<string> queues, long[] skip)
    {
        using var cmd = _db.CreateCommand(_fetchSql);
        cmd.Parameters.AddWithValue("queues", queues.ToArray());
        cmd.Parameters.AddWithValue("invisible", _options.InvisibilityTimeout);
        cmd.Parameters.AddWithValue("skip", skip);
        using var rd = cmd.ExecuteReader();
        if (!rd.Read()) return null;
        // The job first (JobStore's reader), then the message and the job's resources.
        const int at = JobStore.ForAttemptFieldCount;
        var hangfireId = rd.GetInt64(at + 1).ToString(System.Globalization.CultureInfo.InvariantCulture);
        var queue = rd.GetString(at + 2);
        var job = new PostgreSqlFetchedJob(_storage, rd.GetInt64(at), hangfireId, queue, rd.GetDateTime(at + 3));
        var message = JobStore.ReadForAttempt(rd) is not { } record
            ? new FetchedMessage(hangfireId, queue, null, null, 0, 0, 0)
            : new FetchedMessage(hangfireId, queue, record.Id, record.Tenant, rd.GetDouble(at + 4), rd.GetInt64(at + 5), rd.GetInt32(at + 6), rd.GetInt64(at + 7), record);
        return (job, message);
    }

    /// <summary>One LISTEN per process on the channel Hangfire.PostgreSql notifies on each enqueue (EnableLongPolling),
    /// and on <see cref="TenantChanges.Channel"/>. Started by the first fetch.</summary>
    internal void EnsureListening()
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
                        // One connection delivers in commit order, one at a time: a new tenant's change is taken before
                        // its first job's enqueue wakes the fetch.
                        conn.Notification += (_, e) =>
                        {
                            if (e.Channel == TenantChanges.Channel) _tenants.Changed();
                            else _notified.Set();
                        };
                        try
                        {
                            await using (var listen = new NpgsqlCommand($"LISTEN new_job; LISTEN {TenantChanges.Channel}", conn))
                                await listen.ExecuteNonQueryAsync(_stop.Token);
                            _tenants.Listening();
                            while (true) await conn.WaitAsync(_stop.Token);
                        }
                        finally
                        {
                            _tenants.Lost();
                        }
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
    internal sealed class TurnFetchedJob(PostgreSqlFetchedJob inner, FetchTurn turn, string schema) : IFetchedJob
    {
        private const BindingFlags Private = BindingFlags.NonPublic | BindingFlags.Instance;
        // The library's fetched job's own lock (its keep-alive and removal take it), its "removed" flag and the fetch time
        // its statements match (the keep-alive moves it on).
        private static readonly FieldInfo? SyncRootField = typeof(PostgreSqlFetchedJob).GetField("_syncRoot", Private);
        private static readonly FieldInfo? RemovedField = typeof(PostgreSqlFetchedJob).GetField("_removedFromQueue", Private);
        private static readonly PropertyInfo? FetchedAtProperty = typeof(PostgreSqlFetchedJob).GetProperty("FetchedAt", Private);

        /// <summary>Whether Hangfire.PostgreSql's fetched job has the members <see cref="RemoveWithin"/> relies on.</summary>
        public static bool CanRemoveWithin =>
            SyncRootField?.FieldType == typeof(object) && RemovedField?.FieldType == typeof(bool) && FetchedAtProperty?.PropertyType == typeof(DateTime?);

        private bool _removedWithin;

        public string JobId => inner.JobId;

        /// <summary>The library's removal, unless a committed transaction removed the message already.</summary>
        public void RemoveFromQueue()
        {
            if (!_removedWithin) inner.RemoveFromQueue();
        }

        public void Requeue() => inner.Requeue();

        /// <summary>
        /// Runs <paramref name="commit"/> with the library's own removal of this message among its statements
        /// (<paramref name="enqueue"/>: the transaction's command queue), holding the library's lock on the message so that
        /// its keep-alive cannot move the fetch time in between. Once committed, the message counts as removed, as after the
        /// library's removal: its later removal and disposal run nothing. A message handed back meanwhile is not removed.
        /// </summary>
        internal void RemoveWithin(Action<Action<IDbConnection>> enqueue, Action commit)
        {
            lock (SyncRootField!.GetValue(inner)!)
            {
                if (FetchedAtProperty!.GetValue(inner) is not DateTime fetchedAt)
                {
                    commit();
                    return;
                }
                var id = inner.Id;
                enqueue(connection =>
                {
                    using var command = connection.CreateCommand();
                    command.CommandText = $@"DELETE FROM ""{schema}"".""jobqueue"" WHERE ""id"" = @Id AND ""fetchedat"" = @FetchedAt;";
                    command.Parameters.Add(new NpgsqlParameter("Id", NpgsqlTypes.NpgsqlDbType.Bigint) { Value = id });
                    // The column is timestamptz; the fetch and the keep-alive read it as UTC.
                    command.Parameters.Add(new NpgsqlParameter("FetchedAt", NpgsqlTypes.NpgsqlDbType.TimestampTz) { Value = fetchedAt });
                    command.ExecuteNonQuery();
                });
                commit();
                RemovedField!.SetValue(inner, true);
                _removedWithin = true;
            }
        }

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
