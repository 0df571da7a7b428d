using Hangfire;
using Hangfire.Common;
using Hangfire.PostgreSql;
using Hangfire.Storage;
using Npgsql;

namespace BatchRunner.Server.Storage;

/// <summary>
/// This process's Hangfire storage: Hangfire.PostgreSql's, except that the distributed locks Hangfire takes through a
/// storage connection (a job's state lock around each state transition, the schedulers' locks) are PostgreSQL
/// transaction-scoped advisory locks (<see cref="HangfireTransactionLocks"/>) instead of rows of its <c>lock</c> table, and
/// that its write transactions (state transitions) commit their statements in one round trip
/// (<see cref="HangfireBatchedTransaction"/>).
/// </summary>
public sealed class HangfireStorage(IConnectionFactory connections, PostgreSqlStorageOptions options)
    : PostgreSqlStorage(connections, options)
{
    private readonly HangfireTransactionLocks locks = new(connections, options);
    private readonly IConnectionFactory _connections = connections;
    private readonly PostgreSqlStorageOptions _options = options;

    /// <summary>Hangfire's feature "the storage's transaction removes a performed message" for the messages
    /// <see cref="FairShareQueueProvider"/> fetches: the worker's last state change removes it, one round trip fewer.</summary>
    internal static readonly string TransactionalAcknowledge = JobStorageFeatures.Transaction.RemoveFromQueue(typeof(FairShareQueueProvider.TurnFetchedJob));

    public override bool HasFeature(string featureId) =>
        featureId == TransactionalAcknowledge
            ? BatchedTransactions && HangfireBatchedTransaction.IsSupported && FairShareQueueProvider.TurnFetchedJob.CanRemoveWithin
            : base.HasFeature(featureId);

    /// <summary>Whether write transactions commit in one round trip (<see cref="HangfireBatchedTransaction"/>); false gives
    /// Hangfire.PostgreSql's own, statement by statement (for tests that compare the two).</summary>
    internal bool BatchedTransactions { get; init; } = true;

    public override IStorageConnection GetConnection()
    {
        // The base checks the storage is initialised (schema prepared) before handing out a connection; the connection it
        // makes holds nothing until used.
        using (base.GetConnection()) { }
        return new LockingConnection(this, locks, BatchedTransactions
            ? connection => new HangfireBatchedTransaction(this, _connections, _options, connection.TakeStateLock)
            : _ => new PostgreSqlWriteOnlyTransaction(this, () => null));
    }

    /// <summary>Hangfire.PostgreSql's connection with <see cref="HangfireTransactionLocks"/> for its locks. Like the base, one
    /// thread at a time; a resource locked again on the same connection is held once and released with its last holder.</summary>
    private sealed class LockingConnection(PostgreSqlStorage storage, HangfireTransactionLocks locks, Func<LockingConnection, IWriteOnlyTransaction> writeTransaction)
        : PostgreSqlConnection(storage)
    {
        private readonly Dictionary<string, (HangfireTransactionLocks.Held Lock, int Holders)> _held = new(StringComparer.Ordinal);

        public override IWriteOnlyTransaction CreateWriteTransaction() => writeTransaction(this);

        /// <summary>
        /// Hands over the state lock of Hangfire job <paramref name="jobId"/> that this connection holds once (Hangfire's
        /// state changer: lock, read, one write transaction, release), for that transaction to commit in the lock's own
        /// transaction (<see cref="HangfireTransactionLocks.Held.CommitWith"/>): the lock then ends with the commit, which is
        /// where the state changer's scope ends anyway, and its release costs no round trip of its own. Null when it is not
        /// held, or held more than once (an outer scope still needs it). The holder's later release does nothing.
        /// </summary>
        internal HangfireTransactionLocks.Held? TakeStateLock(string jobId)
        {
            var resource = $"job:{jobId}:state-lock";
            if (!_held.TryGetValue(resource, out var held) || held.Holders != 1) return null;
            _held.Remove(resource);
            return held.Lock;
        }

        public override IDisposable AcquireDistributedLock(string resource, TimeSpan timeout)
        {
            ArgumentException.ThrowIfNullOrEmpty(resource);
            if (_held.TryGetValue(resource, out var held))
                _held[resource] = (held.Lock, held.Holders + 1);
            else
                _held[resource] = held = (locks.Acquire(resource, timeout, StateLockedJob(resource)), 1);
            return new Holder(this, resource, held.Lock);
        }

        /// <summary>The Hangfire job whose state lock <paramref name="resource"/> is (Hangfire's <c>job:{id}:state-lock</c>).</summary>
        private static long? StateLockedJob(string resource) =>
            resource.StartsWith("job:", StringComparison.Ordinal) && resource.EndsWith(":state-lock", StringComparison.Ordinal)
            && long.TryParse(resource.AsSpan(4, resource.Length - 4 - ":state-lock".Length), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var id)
                ? id : null;

        /// <summary>
        /// The job as read with its state lock, when this connection holds that lock and has not handed the read out yet
        /// (Hangfire's state changer reads the job right after taking its lock): one round trip fewer. Otherwise, and for a
        /// second read, the library's own read.
        /// </summary>
        public override JobData GetJobData(string id)
        {
            if (id is not null && _held.TryGetValue($"job:{id}:state-lock", out var held) && held.Lock.TakeJob() is { } row)
                return row.ToJobData()!;
            return base.GetJobData(id!);
        }

        private void Release(string resource, HangfireTransactionLocks.Held taken)
        {
            // Not this holder's lock any more: handed to a commit (TakeStateLock), and perhaps taken anew since.
            if (!_held.TryGetValue(resource, out var held) || held.Lock != taken) return;
            if (held.Holders > 1)
            {
                _held[resource] = (held.Lock, held.Holders - 1);
                return;
            }
            _held.Remove(resource);
            held.Lock.Dispose();
        }

        public override void Dispose()
        {
            // A lock whose holder forgot it ends with the connection that Hangfire disposes, not later.
            foreach (var (held, _) in _held.Values) held.Dispose();
            _held.Clear();
            base.Dispose();
        }

        private sealed class Holder(LockingConnection connection, string resource, HangfireTransactionLocks.Held taken) : IDisposable
        {
            private int _disposed;

            public void Dispose()
            {
                if (Interlocked.Exchange(ref _disposed, 1) == 0) connection.Release(resource, taken);
            }
        }
    }
}

/// <summary>
/// Hangfire's distributed locks as transaction-scoped advisory locks: taking one opens a transaction on a connection of
/// Hangfire's pool (its connection factory's) and waits in <c>pg_advisory_xact_lock</c> on a 64-bit hash of the resource's name (one round trip, with the
/// <c>BEGIN</c>); releasing it rolls that transaction back (one more). Hangfire.PostgreSql's rows cost five round trips and
/// two WAL flushes per lock (delete the expired, commit; insert, commit; delete), twice per job. A job's state lock (taken
/// around each of its state changes) also reads the job in its round trip, the read the state changer makes next
/// (<c>LockingConnection.GetJobData</c>), and is released by the state change's own commit
/// (<see cref="Held.CommitWith"/>): a state change is two round trips, the lock with the read and the commit.
/// </summary>
/// <remarks>
/// What is guaranteed:
/// <list type="bullet">
/// <item>Exclusion: PostgreSQL grants the lock to one session at a time; every process of the cluster takes these locks
/// this way (all nodes must run a BatchRunner that does: one that still takes Hangfire.PostgreSql's rows would not
/// exclude it). Two names with the same hash only wait for each other.</item>
/// <item>No lock outlives its holder: it ends with its transaction, which ends with the release, with the holder's
/// connection (a process killed, a connection broken) or with the database (a restart); a pooled connection never goes
/// back to the pool inside the transaction (Npgsql rolls back an open transaction on close). Rows outlived a killed
/// database (<see cref="HangfireLocks"/> removes those that Hangfire.PostgreSql's own expiration manager still takes).</item>
/// <item>A holder that goes silent (a partition, a host gone) loses its lock when its transaction has been idle for
/// Hangfire's <c>DistributedLockTimeout</c> (PostgreSQL ends the session: <c>idle_in_transaction_session_timeout</c>),
/// as a row older than that was taken over.</item>
/// <item>Waiting: at most the timeout Hangfire asks for (<c>lock_timeout</c>), then Hangfire's
/// <see cref="DistributedLockTimeoutException"/>, as before; a deadlock between holders, which rows waited out, fails one
/// of them at once with the same exception (Hangfire retries a state change that failed).</item>
/// </list>
/// The transaction writes nothing and holds no snapshot between statements, so it costs no WAL and does not hold back
/// vacuum.
/// </remarks>
public sealed class HangfireTransactionLocks(IConnectionFactory connections, PostgreSqlStorageOptions options)
{
    private const string SettingsSql =
        "select set_config('lock_timeout', $1, true), set_config('idle_in_transaction_session_timeout', $2, true)";

    private const string LockSql = "select pg_advisory_xact_lock(hashtextextended($1, 0))";

    /// <summary>Takes <paramref name="resource"/>'s lock (Hangfire's name; the schema is prefixed as Hangfire.PostgreSql
    /// does), waiting at most <paramref name="timeout"/>, on a connection of Hangfire's pool. The database being away is
    /// tried again until the timeout, as Hangfire.PostgreSql's own lock does, and a failed connection clears that pool
    /// first (whatever broke it): after a database restart its idle connections are dead, and the state change this lock
    /// guards, which takes its connections from the same pool, would otherwise meet them next (Hangfire.PostgreSql ran it
    /// on the lock's own connection, which its retries had renewed).</summary>
    /// <exception cref="DistributedLockTimeoutException">Not granted within the timeout, or a deadlock.</exception>
    /// <param name="readJob">A Hangfire job to read in the same round trip once the lock is granted (a job's state lock:
    /// the state changer reads the job next), as <see cref="Held.TakeJob"/> hands it out.</param>
    public Held Acquire(string resource, TimeSpan timeout, long? readJob = null)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        for (var tries = 0; ; tries++)
        {
            try { return TryAcquire(resource, Max(timeout - clock.Elapsed, TimeSpan.FromMilliseconds(1)), readJob); }
            catch (Exception e) when (DatabaseErrors.IsOutage(e) && clock.Elapsed < timeout)
            {
                using (var pooled = connections.GetOrCreateConnection()) NpgsqlConnection.ClearPool(pooled);
                // At once after the first failure (most often one dead pooled connection), then up to a second apart.
                var pause = TimeSpan.FromMilliseconds(Math.Min(1000, tries * 100));
                Thread.Sleep(Max(TimeSpan.Zero, Min(pause, timeout - clock.Elapsed)));
            }
        }
    }

    private static TimeSpan Max(TimeSpan a, TimeSpan b) => a > b ? a : b;

    private static TimeSpan Min(TimeSpan a, TimeSpan b) => a < b ? a : b;

    private Held TryAcquire(string resource, TimeSpan timeout, long? readJob)
    {
        var conn = connections.GetOrCreateConnection();
        try
        {
            conn.Open();
            var tx = conn.BeginTransaction(System.Data.IsolationLevel.ReadCommitted);
            using var batch = new NpgsqlBatch(conn, tx)
            {
                BatchCommands =
                {
                    new NpgsqlBatchCommand(SettingsSql) { Parameters = { new() { Value = Milliseconds(timeout) }, new() { Value = Milliseconds(options.DistributedLockTimeout) } } },
                    new NpgsqlBatchCommand(LockSql) { Parameters = { new() { Value = $"{options.SchemaName}:{resource}" } } },
                },
                // lock_timeout ends the wait; the command's own timeout only backs it up.
                Timeout = (int)Math.Min(int.MaxValue, Math.Ceiling(timeout.TotalSeconds) + 30),
            };
            if (readJob is not { } job)
            {
                batch.ExecuteNonQuery();
                return new Held(conn, tx);
            }
            batch.BatchCommands.Add(new NpgsqlBatchCommand(JobSql) { Parameters = { new() { Value = job } } });
            using var reader = batch.ExecuteReader();
            // The settings' row, the lock's, then the job's (none: no such job).
            reader.NextResult();
            reader.NextResult();
            var row = reader.Read()
                ? new JobRow(job, reader.GetString(0), reader.IsDBNull(1) ? null : reader.GetString(1), reader.IsDBNull(2) ? null : reader.GetString(2), reader.IsDBNull(3) ? default : reader.GetDateTime(3))
                : new JobRow(job, null, null, null, default);
            reader.Close();
            return new Held(conn, tx) { Job = row };
        }
        catch (PostgresException e) when (e.SqlState is PostgresErrorCodes.LockNotAvailable or PostgresErrorCodes.DeadlockDetected)
        {
            conn.Dispose();
            throw new DistributedLockTimeoutException(resource);
        }
        catch
        {
            conn.Dispose();
            throw;
        }
    }

    /// <summary>Hangfire.PostgreSql's read of a job (<c>PostgreSqlConnection.GetJobData</c>), the same columns.</summary>
    private string JobSql =>
        $"""SELECT "invocationdata", "statename", "arguments", "createdat" FROM "{options.SchemaName}"."job" WHERE "id" = $1""";

    /// <summary>
    /// A Hangfire job's row as read inside its state lock's transaction, right after the lock was granted: what the
    /// library's own read after the lock sees (every change made under the lock before was committed before its release).
    /// <see cref="InvocationData"/> null: there was no such job.
    /// </summary>
    public sealed record JobRow(long Id, string? InvocationData, string? StateName, string? Arguments, DateTime CreatedAt)
    {
        /// <summary>The job's data as Hangfire.PostgreSql's <c>GetJobData</c> builds it from the same row (null for none).</summary>
        public JobData? ToJobData()
        {
            if (InvocationData is null) return null;
            var invocation = SerializationHelper.Deserialize<InvocationData>(InvocationData);
            invocation.Arguments = Arguments;
            Job? job = null;
            JobLoadException? loadException = null;
            try { job = invocation.DeserializeJob(); }
            catch (JobLoadException e) { loadException = e; }
            return new JobData { Job = job, State = StateName, CreatedAt = CreatedAt, LoadException = loadException };
        }
    }

    /// <summary>At least 1 ms (PostgreSQL reads 0 as "no limit"), at most int.MaxValue.</summary>
    private static string Milliseconds(TimeSpan span) =>
        Math.Clamp(Math.Ceiling(span.TotalMilliseconds), 1, int.MaxValue).ToString("0", System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>
    /// Puts <c>lock_timeout</c> back to the session's own for the statements a commit runs in the lock's transaction: the
    /// lock's wait set it for the transaction, and a write transaction of the library's own runs without it.
    /// </summary>
    internal const string ResetLockTimeoutSql = "SET LOCAL lock_timeout TO DEFAULT";

    /// <summary>A lock held: disposing it rolls its transaction back (releasing the lock) and returns the connection.</summary>
    public sealed class Held(NpgsqlConnection connection, NpgsqlTransaction transaction) : IDisposable
    {
        private int _disposed;

        /// <summary>The job read with the lock, if asked for; see <see cref="TakeJob"/>.</summary>
        internal JobRow? Job { private get; init; }

        private bool _jobTaken;

        /// <summary>The job read with the lock, once (a second read is the library's own), and only while it is held.</summary>
        public JobRow? TakeJob()
        {
            if (_jobTaken || Volatile.Read(ref _disposed) != 0) return null;
            _jobTaken = true;
            return Job;
        }

        /// <summary>
        /// Runs <paramref name="commands"/> in this lock's transaction and commits it, in one round trip (a batch that ends
        /// in <c>COMMIT</c>): the lock ends with the commit. Released either way: a failed statement ends the batch there
        /// (PostgreSQL skips the rest, the <c>COMMIT</c> included), and the transaction is rolled back, writing nothing.
        /// </summary>
        internal void CommitWith(IEnumerable<NpgsqlBatchCommand> commands, int timeoutSeconds)
        {
            if (Interlocked.Exchange(ref _disposed, 1) != 0) throw new ObjectDisposedException(nameof(Held));
            try
            {
                using var batch = new NpgsqlBatch(connection, transaction) { Timeout = timeoutSeconds };
                batch.BatchCommands.Add(new NpgsqlBatchCommand(ResetLockTimeoutSql));
                foreach (var command in commands) batch.BatchCommands.Add(command);
                batch.BatchCommands.Add(new NpgsqlBatchCommand(HangfireBatchedTransaction.CommitSql));
                batch.ExecuteNonQuery();
            }
            catch
            {
                try { transaction.Rollback(); }
                catch (Exception e) when (e is NpgsqlException or InvalidOperationException) { }
                throw;
            }
            finally { connection.Dispose(); }
        }

        internal NpgsqlConnection Connection => connection;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
            try { transaction.Rollback(); }
            catch (Exception e) when (e is NpgsqlException or InvalidOperationException)
            {
                // The connection broke (the lock went with its session) or the server ended the session after the idle
                // limit; either way nothing is held. Closing returns or discards the connection.
            }
            finally { connection.Dispose(); }
        }
    }
}
