using Npgsql;

namespace BatchRunner.Server.Storage;

/// <summary>
/// The one answer to "is this the database being away?", for every caller: <see cref="Durably"/> retries such
/// a write, the executor does not record it as the job's failure (the job is re-delivered), and the HTTP API
/// answers 503 with Retry-After instead of 500.
/// </summary>
/// <remarks>
/// An outage is an <see cref="NpgsqlException"/> (Npgsql wraps refused connections, broken streams and
/// timeouts in one), except a <see cref="PostgresException"/> that the server raised for the statement
/// itself (a constraint, a bug in the SQL): only a transient one, or one of the SQLSTATE classes 08
/// (connection exception) and 57P (the server shutting down or starting), counts. An I/O or socket error
/// that did not come through Npgsql is the host's, not the database's.
/// </remarks>
public static class DatabaseErrors
{
    public static bool IsOutage(Exception e) => e switch
    {
        PostgresException pg => pg.IsTransient || pg.SqlState.StartsWith("57P", StringComparison.Ordinal) || pg.SqlState.StartsWith("08", StringComparison.Ordinal),
        NpgsqlException => true,
        _ => e.InnerException is { } inner && IsOutage(inner),
    };
}
