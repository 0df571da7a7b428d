using Npgsql;

namespace BatchRunner.Server.Storage;

/// <summary>
/// Connections that keep session state: a LISTEN, a session advisory lock. They are never pooled, so that their
/// state ends with them: BatchRunner's own data source skips Npgsql's <c>DISCARD ALL</c> on reuse
/// (<see cref="StorageServices.PooledConnectionString"/>), and a pooled connection handed back still listening or
/// still holding a lock would pass that state on to whichever statement takes it next.
/// </summary>
/// <remarks>Open one for as long as the state is needed (a listener for the process's life, the migrator for its
/// run); closing it closes the session. Costs a connection start (a few ms) per open, which these rare opens afford.</remarks>
public sealed class SessionConnections(string connectionString) : IAsyncDisposable
{
    private readonly NpgsqlDataSource _db = NpgsqlDataSource.Create(new NpgsqlConnectionStringBuilder(connectionString) { Pooling = false }.ConnectionString);

    /// <summary>The unpooled data source (a new session per connection).</summary>
    public NpgsqlDataSource DataSource => _db;

    public ValueTask<NpgsqlConnection> OpenAsync(CancellationToken ct) => _db.OpenConnectionAsync(ct);

    public ValueTask DisposeAsync() => _db.DisposeAsync();
}
