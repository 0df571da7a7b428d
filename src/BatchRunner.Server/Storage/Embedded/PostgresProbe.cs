using System.Net.Sockets;
using Npgsql;

namespace BatchRunner.Server.Storage.Embedded;

/// <summary>
/// Asks the embedded cluster whether it accepts connections: <c>select 1</c> on its own connection (no
/// pool, so a restart never hands it a dead one), with second-scale timeouts. The connection is kept
/// between probes, so a periodic probe costs one round trip rather than a new backend.
/// </summary>
internal sealed class PostgresProbe(string connectionString) : IAsyncDisposable
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(2);

    private readonly string _connectionString = new NpgsqlConnectionStringBuilder(connectionString)
    {
        Pooling = false,
        Timeout = (int)Timeout.TotalSeconds,
        CommandTimeout = (int)Timeout.TotalSeconds,
    }.ConnectionString;

    private NpgsqlConnection? _connection;

    /// <summary>Null when it answers; else why not ("the database system is starting up", "No such file or directory").</summary>
    public async Task<string?> WhyNotAcceptingAsync(CancellationToken ct)
    {
        try
        {
            if (_connection is not { State: System.Data.ConnectionState.Open })
            {
                await DropAsync();
                _connection = new NpgsqlConnection(_connectionString);
                await _connection.OpenAsync(ct);
            }
            await using var cmd = new NpgsqlCommand("select 1", _connection);
            await cmd.ExecuteScalarAsync(ct);
            return null;
        }
        catch (PostgresException e) when (e.SqlState is not (PostgresErrorCodes.CannotConnectNow or PostgresErrorCodes.AdminShutdown or PostgresErrorCodes.CrashShutdown))
        {
            // It answers (too many clients, say): up, whatever the reason it refused this probe.
            await DropAsync();
            return null;
        }
        catch (Exception e) when (e is NpgsqlException or SocketException or TimeoutException or IOException
                                  || (e is OperationCanceledException && !ct.IsCancellationRequested))
        {
            await DropAsync();
            return e.Message;
        }
    }

    private async Task DropAsync()
    {
        if (_connection is null) return;
        try { await _connection.DisposeAsync(); } catch (Exception e) when (e is NpgsqlException or IOException or SocketException) { }
        _connection = null;
    }

    public ValueTask DisposeAsync() => new(DropAsync());
}
