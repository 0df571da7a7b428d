using Npgsql;

namespace BatchRunner.Server.Storage;

/// <summary>
/// Connections that keep session state: a LISTEN, a session advisory lock. They are never pooled, so that their
/// state ends with them: BatchRunner's own data source skips Npgsql's <c>DISCARD ALL</c> on reuse
/// (<see cref="StorageServices.PooledConnectionString"/>), and a pooled connection handed back still listening or
/// still holding a lock would pass that state on to whichever statement takes it next.
/// </summary>
/// <remarks>Open one for as long as the state is needed (a listener for the process's life, the migrator for its
/// run); closing it closes the session. Costs a connection start (a few ms) per open, which these rare opens afford.
/// Over TCP they send keepalives: a listener whose peer vanished without a word (a host down, a partition) notices
/// within a minute and listens again, instead of waiting forever on a dead socket. A Unix socket (the embedded
/// database) refuses the option, and its peer cannot vanish that way.</remarks>
public sealed class SessionConnections : IAsyncDisposable
{
    private readonly string _connectionString;
    private readonly NpgsqlDataSource _db;

    public SessionConnections(string connectionString)
    {
        var builder = new NpgsqlConnectionStringBuilder(connectionString) { Pooling = false };
        if (builder.Host is { Length: > 0 } host && !host.StartsWith('/') && !host.StartsWith('@'))
        {
            builder.TcpKeepAlive = true;
            builder.TcpKeepAliveTime = 30;
            builder.TcpKeepAliveInterval = 5;
        }
        _connectionString = builder.ConnectionString;
        _db = NpgsqlDataSource.Create(_connectionString);
    }

    /// <summary>The unpooled data source (a new session per connection).</summary>
    public NpgsqlDataSource DataSource => _db;

    public ValueTask<NpgsqlConnection> OpenAsync(CancellationToken ct) => _db.OpenConnectionAsync(ct);

    /// <summary>Opens one whose backend shows as <paramref name="applicationName"/> in pg_stat_activity.</summary>
    public async Task<NpgsqlConnection> OpenAsync(string applicationName, CancellationToken ct)
    {
        var conn = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(_connectionString) { ApplicationName = applicationName }.ConnectionString);
        try
        {
            await conn.OpenAsync(ct);
            return conn;
        }
        catch
        {
            await conn.DisposeAsync();
            throw;
        }
    }

    /// <summary>
    /// Opens one as <paramref name="applicationName"/> that LISTENs on <paramref name="channel"/>, whose notifications carry a
    /// job's id: each is handed to <paramref name="onJob"/> (others are dropped) while the caller waits on the connection
    /// (<see cref="NpgsqlConnection.WaitAsync(CancellationToken)"/>). The caller owns it: disposing it ends the LISTEN.
    /// </summary>
    public async Task<NpgsqlConnection> ListenAsync(string applicationName, string channel, Action<Guid> onJob, CancellationToken ct)
    {
        var conn = await OpenAsync(applicationName, ct);
        try
        {
            conn.Notification += (_, e) =>
            {
                if (Guid.TryParse(e.Payload, out var id)) onJob(id);
            };
            await using (var listen = new NpgsqlCommand($"LISTEN {channel}", conn)) await listen.ExecuteNonQueryAsync(ct);
            return conn;
        }
        catch
        {
            await conn.DisposeAsync();
            throw;
        }
    }

    public ValueTask DisposeAsync() => _db.DisposeAsync();
}
