using System.Net.Sockets;
using Npgsql;

namespace BatchRunner.Server.Storage;

/// <summary>The database probe behind /healthz: one round trip, any database error reported as text, never thrown.</summary>
public sealed class DatabaseHealth(NpgsqlDataSource db)
{
    public const string Ok = "ok";

    /// <summary><see cref="Ok"/>, or "unavailable: why".</summary>
    public async Task<string> CheckAsync(CancellationToken ct)
    {
        try
        {
            await using var cmd = db.CreateCommand("select 1");
            await cmd.ExecuteScalarAsync(ct);
            return Ok;
        }
        catch (Exception e) when (e is NpgsqlException or SocketException or TimeoutException)
        {
            return "unavailable: " + e.Message;
        }
    }
}
