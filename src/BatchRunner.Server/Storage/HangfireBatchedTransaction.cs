using System.Data;
using System.Data.Common;
using System.Reflection;
using Hangfire.PostgreSql;
using Hangfire.PostgreSql.Factories;
using Hangfire.PostgreSql.Utils;
using Npgsql;

namespace BatchRunner.Server.Storage;

/// <summary>
/// Hangfire.PostgreSql's write-only transaction, committed in one round trip: a state transition (the state row and the
/// job's state, its expiry, the stats counters, the queue's row and its NOTIFY) was one round trip per statement and one
/// for the <c>COMMIT</c>, 3 to 6 per transition: 14 for a trivial job's Enqueued, Processing and Succeeded.
/// </summary>
/// <remarks>
/// What is guaranteed:
/// <list type="bullet">
/// <item>The same statements: every operation is the library's own (this class overrides <see cref="Commit"/>, and the state setters only to note
/// whose state the transaction sets), and at
/// the commit the commands it queued run, as in the library's commit, but against a connection that only records each
/// command's text and parameters (as the library's Dapper code built them: text, types, sizes, values, in order; the
/// time-dependent values, <c>DateTime.UtcNow</c>, taken at the commit as before). Those commands then go to PostgreSQL
/// as one <see cref="NpgsqlBatch"/> between <c>BEGIN TRANSACTION ISOLATION LEVEL READ COMMITTED</c> (the isolation the
/// library's transaction scope asks for) and <c>COMMIT</c>, one round trip, on a connection of Hangfire's pool.</item>
/// <item>All or nothing: a statement that fails ends the batch there (PostgreSQL skips the rest of it, the
/// <c>COMMIT</c> included), the transaction is rolled back, and Hangfire sees the exception at <see cref="Commit"/>, as
/// before. The queues that got a job are signalled in this process only after the commit, as the library does.</item>
/// <item>Where that cannot be done exactly the whole transaction is the library's: a command that reads (none does in
/// Hangfire.PostgreSql 1.21.1), an ambient <see cref="System.Transactions.TransactionScope"/> that the library would join,
/// a storage on one existing connection, or a library whose internals are not the ones this relies on
/// (<see cref="IsSupported"/>, pinned by a test).</item>
/// <item>A state change made under its job's state lock (Hangfire's state changer: the lock, the job's read, this
/// transaction, the release) commits in the lock's own transaction (<see cref="HangfireTransactionLocks.Held.CommitWith"/>):
/// the statements and the lock's release in one round trip, where they were two (this batch, then the lock's rollback).
/// The lock ends with the commit, the end of the state changer's scope; the statements run as in a transaction of
/// their own (read committed, <c>lock_timeout</c> the session's).</item>
/// <item>The worker's final state change removes the message it performed, with the library's own statement, in this
/// transaction (Hangfire's transactional acknowledge), where the worker removed it in a round trip of its own after it.</item>
/// </list>
/// The timeout: each statement had its own (the connection's command timeout; none for the queue's two, whose code sets 0);
/// the batch has their sum, none when one had none.
/// </remarks>
public sealed class HangfireBatchedTransaction : PostgreSqlWriteOnlyTransaction
{
    /// <summary>What Npgsql sends for <c>BeginTransaction(IsolationLevel.ReadCommitted)</c>, which the library's
    /// transaction scope (read committed, no ambient transaction) makes.</summary>
    internal const string BeginSql = "BEGIN TRANSACTION ISOLATION LEVEL READ COMMITTED";

    internal const string CommitSql = "COMMIT";

    private const BindingFlags Private = BindingFlags.NonPublic | BindingFlags.Instance;

    // The library's queued commands and the queues its commit signals (private fields of PostgreSqlWriteOnlyTransaction),
    // and the registry of in-process queue events it signals (PostgreSqlJobQueue's, internal).
    private static readonly FieldInfo? CommandsField = typeof(PostgreSqlWriteOnlyTransaction).GetField("_commandQueue", Private);
    private static readonly FieldInfo? QueuesField = typeof(PostgreSqlWriteOnlyTransaction).GetField("_queuesWithAddedJobs", Private);
    private static readonly AutoResetEventRegistry? QueueEvents =
        typeof(PostgreSqlJobQueue).GetField("_queueEventRegistry", BindingFlags.NonPublic | BindingFlags.Static)?.GetValue(null) as AutoResetEventRegistry;

    private readonly IConnectionFactory _connections;
    private readonly PostgreSqlStorageOptions _options;
    private readonly Func<string, HangfireTransactionLocks.Held?>? _stateLock;
    private readonly List<FairShareQueueProvider.TurnFetchedJob> _acknowledged = [];
    // The one Hangfire job whose state this transaction sets (null: none, or several).
    private string? _stateOf;
    private bool _severalStates;

    /// <param name="stateLock">Hands over the connection's state lock of a job (<c>LockingConnection.TakeStateLock</c>), so
    /// that a state change's transaction commits in the lock's own transaction; null: never.</param>
    public HangfireBatchedTransaction(PostgreSqlStorage storage, IConnectionFactory connections, PostgreSqlStorageOptions options,
        Func<string, HangfireTransactionLocks.Held?>? stateLock = null)
        // The library's connection hands its transaction a "dedicated connection" that is always null in 1.21.1 (each
        // commit takes a connection of the pool): the same for the fallback.
        : base(storage, () => null)
    {
        _connections = connections;
        _options = options;
        _stateLock = stateLock;
    }

    public override void SetJobState(string jobId, Hangfire.States.IState state)
    {
        NoteStateOf(jobId);
        base.SetJobState(jobId, state);
    }

    public override void AddJobState(string jobId, Hangfire.States.IState state)
    {
        NoteStateOf(jobId);
        base.AddJobState(jobId, state);
    }

    private void NoteStateOf(string jobId)
    {
        if (_stateOf is null && !_severalStates) _stateOf = jobId;
        else if (_stateOf != jobId) (_stateOf, _severalStates) = (null, true);
    }

    /// <summary>
    /// Hangfire's transactional acknowledge (<see cref="HangfireStorage.TransactionalAcknowledge"/>): the worker's final
    /// state change removes the message it performed in the same transaction, instead of in a round trip of its own after
    /// it. The removal is the library's own statement (<see cref="FairShareQueueProvider.TurnFetchedJob.RemoveWithin"/>).
    /// </summary>
    public override void RemoveFromQueue(Hangfire.Storage.IFetchedJob fetchedJob)
    {
        if (fetchedJob is FairShareQueueProvider.TurnFetchedJob turn && FairShareQueueProvider.TurnFetchedJob.CanRemoveWithin) _acknowledged.Add(turn);
        else base.RemoveFromQueue(fetchedJob);
    }

    /// <summary>Whether this version of Hangfire.PostgreSql has the internals this class reads; when not, every commit is
    /// the library's own.</summary>
    public static bool IsSupported =>
        CommandsField?.FieldType == typeof(Queue<Action<IDbConnection>>) && QueuesField?.FieldType == typeof(List<string>) && QueueEvents is not null;

    public override void Commit() => CommitRemoving(0);

    /// <summary>Commits with the removal of each acknowledged message from <paramref name="next"/> on (each holds its
    /// message's own lock against the keep-alive meanwhile).</summary>
    private void CommitRemoving(int next)
    {
        if (next < _acknowledged.Count)
            _acknowledged[next].RemoveWithin(Enqueue, () => CommitRemoving(next + 1));
        else
            CommitQueued();
    }

    /// <summary>Adds a command to the library's queue, as its own operations do.</summary>
    private void Enqueue(Action<IDbConnection> command) => ((Queue<Action<IDbConnection>>)CommandsField!.GetValue(this)!).Enqueue(command);

    /// <summary>
    /// A statement of the caller's own, committed in this transaction's batch after the library's statements (all or
    /// nothing, in the same round trip); <paramref name="committed"/> gets the value of its one column (null without a
    /// row) once the batch committed. Never run when the commit is the library's own (<see cref="CanBatch"/> false):
    /// the caller, seeing no value, runs it itself.
    /// </summary>
    /// <param name="column">The name of its one result column, unique in the batch (the library's statements return no rows).</param>
    internal void AddStatement(NpgsqlBatchCommand command, string column, Action<object?> committed) => _statements.Add((command, column, committed));

    private readonly List<(NpgsqlBatchCommand Command, string Column, Action<object?> Committed)> _statements = [];

    private void CommitQueued()
    {
        if (!CanBatch() || Record() is not { Count: > 0 } commands)
        {
            base.Commit();
            return;
        }

        // A state change under its job's lock (Hangfire's state changer: lock, read, this transaction, release) commits in
        // the lock's transaction: one round trip for the statements and the lock's release together.
        if (_statements.Count == 0 && _stateOf is { } job && _stateLock?.Invoke(job) is { } held)
        {
            held.CommitWith(commands.Select(c => c.ToBatchCommand()), TimeoutSeconds(held.Connection, commands));
            SignalQueues();
            return;
        }

        using var connection = _connections.GetOrCreateConnection();
        if (connection.State == ConnectionState.Closed) connection.Open();
        using var batch = new NpgsqlBatch(connection) { Timeout = TimeoutSeconds(connection, commands) };
        batch.BatchCommands.Add(new NpgsqlBatchCommand(BeginSql));
        foreach (var command in commands) batch.BatchCommands.Add(command.ToBatchCommand());
        foreach (var statement in _statements) batch.BatchCommands.Add(statement.Command);
        batch.BatchCommands.Add(new NpgsqlBatchCommand(CommitSql));
        var values = new Dictionary<string, object?>(StringComparer.Ordinal);
        try
        {
            if (_statements.Count == 0)
            {
                batch.ExecuteNonQuery();
            }
            else
            {
                // Each statement that returns rows is a result of the reader, in order; ours are told by their column.
                using var reader = batch.ExecuteReader();
                do
                {
                    if (reader.FieldCount == 1 && _statements.Exists(s => s.Column == reader.GetName(0)))
                        values[reader.GetName(0)] = reader.Read() ? reader.GetValue(0) : null;
                } while (reader.NextResult());
            }
        }
        catch
        {
            RollBackQuietly(connection);
            throw;
        }

        SignalQueues();
        foreach (var statement in _statements)
            statement.Committed(values.TryGetValue(statement.Column, out var value) && value is not DBNull ? value : null);
    }

    private void SignalQueues()
    {
        foreach (var queue in (List<string>)QueuesField!.GetValue(this)!) QueueEvents!.Set(queue);
    }

    /// <summary>The commands the library queued, as its commit would run them; null when one of them does something other
    /// than execute a statement (then the library commits).</summary>
    internal IReadOnlyList<RecordedCommand>? Record()
    {
        var recorder = new RecordingConnection();
        try
        {
            foreach (var command in (Queue<Action<IDbConnection>>)CommandsField!.GetValue(this)!) command(recorder);
        }
        catch (NotSupportedException)
        {
            return null;
        }
        return recorder.Commands;
    }

    private bool CanBatch() =>
        IsSupported
        // The library joins an ambient transaction scope when enlistment is on (its default); that is left to it.
        && !(_options.EnableTransactionScopeEnlistment && System.Transactions.Transaction.Current is not null)
        // One connection shared by the storage: the library's own handling of it.
        && _connections is not ExistingNpgsqlConnectionFactory;

    /// <summary>The sum of the statements' own timeouts (0, no limit, when one has none).</summary>
    private static int TimeoutSeconds(NpgsqlConnection connection, IReadOnlyList<RecordedCommand> commands)
    {
        long sum = 0;
        foreach (var command in commands)
        {
            var seconds = command.TimeoutSeconds ?? connection.CommandTimeout;
            if (seconds <= 0) return 0;
            sum += seconds;
        }
        return (int)Math.Min(int.MaxValue, sum);
    }

    private static void RollBackQuietly(NpgsqlConnection connection)
    {
        // A statement failed: the transaction is aborted (or the connection is gone, and the transaction with it).
        try
        {
            if (connection.State == ConnectionState.Open)
            {
                using var rollback = new NpgsqlCommand("ROLLBACK", connection);
                rollback.ExecuteNonQuery();
            }
        }
        catch (Exception e) when (e is NpgsqlException or InvalidOperationException)
        {
            // Broken: Npgsql discards the connection instead of returning it to the pool.
        }
    }

    /// <summary>One statement as the library's code built it.</summary>
    internal sealed record RecordedCommand(string Text, IReadOnlyList<NpgsqlParameter> Parameters, int? TimeoutSeconds)
    {
        public NpgsqlBatchCommand ToBatchCommand()
        {
            var command = new NpgsqlBatchCommand(Text);
            foreach (var parameter in Parameters) command.Parameters.Add(parameter.Clone());
            return command;
        }
    }

    /// <summary>A connection that runs nothing: each command executed is recorded. Anything else (a query, a transaction
    /// of its own) is not supported.</summary>
    private sealed class RecordingConnection : DbConnection
    {
        public List<RecordedCommand> Commands { get; } = [];

        [System.Diagnostics.CodeAnalysis.AllowNull]
        public override string ConnectionString { get; set; } = "recording";
        public override string Database => "";
        public override string DataSource => "";
        public override string ServerVersion => "";
        public override ConnectionState State => ConnectionState.Open;

        public override void Open() { }

        public override void Close() { }

        public override void ChangeDatabase(string databaseName) => throw new NotSupportedException();

        protected override DbTransaction BeginDbTransaction(IsolationLevel isolationLevel) => throw new NotSupportedException();

        protected override DbCommand CreateDbCommand() => new RecordingCommand(this);
    }

    private sealed class RecordingCommand(RecordingConnection connection) : DbCommand
    {
        // Npgsql's own parameters, so that what the library's code sets on them (type, size, value) is kept as Npgsql reads it.
        private readonly NpgsqlCommand _parameters = new();
        private int? _timeoutSeconds;

        [System.Diagnostics.CodeAnalysis.AllowNull]
        public override string CommandText { get; set; } = "";
        public override int CommandTimeout
        {
            get => _timeoutSeconds ?? 30;
            set => _timeoutSeconds = value;
        }
        public override CommandType CommandType { get; set; } = CommandType.Text;
        public override bool DesignTimeVisible { get; set; }
        public override UpdateRowSource UpdatedRowSource { get; set; }
        protected override DbConnection? DbConnection { get; set; } = connection;
        protected override DbParameterCollection DbParameterCollection => _parameters.Parameters;
        protected override DbTransaction? DbTransaction { get; set; }

        public override int ExecuteNonQuery()
        {
            if (CommandType != CommandType.Text || DbTransaction is not null) throw new NotSupportedException();
            connection.Commands.Add(new RecordedCommand(CommandText, [.. _parameters.Parameters.Select(p => p.Clone())], _timeoutSeconds));
            // The library ignores the count.
            return 1;
        }

        public override object? ExecuteScalar() => throw new NotSupportedException();

        protected override DbDataReader ExecuteDbDataReader(CommandBehavior behavior) => throw new NotSupportedException();

        public override void Cancel() { }

        public override void Prepare() { }

        protected override DbParameter CreateDbParameter() => _parameters.CreateParameter();
    }
}
