using System.Net.Sockets;
using Npgsql;

namespace BatchRunner.Server.Execution;

/// <summary>
/// Writes that must not be lost when the database restarts under a running job: retried with back-off
/// until the database answers again (or the deadline passes).
/// </summary>
public static class Durably
{
    public static readonly TimeSpan DefaultDeadline = TimeSpan.FromMinutes(10);

    public static async Task<T> RunAsync<T>(Func<CancellationToken, Task<T>> write, CancellationToken ct = default, TimeSpan? deadline = null)
    {
        var until = DateTime.UtcNow + (deadline ?? DefaultDeadline);
        var delay = TimeSpan.FromMilliseconds(100);
        while (true)
        {
            try { return await write(ct); }
            catch (Exception e) when (IsTransient(e) && DateTime.UtcNow < until && !ct.IsCancellationRequested)
            {
                await Task.Delay(delay, ct);
                delay = TimeSpan.FromMilliseconds(Math.Min(delay.TotalMilliseconds * 2, 2000));
            }
        }
    }

    public static Task RunAsync(Func<CancellationToken, Task> write, CancellationToken ct = default, TimeSpan? deadline = null) =>
        RunAsync(async c => { await write(c); return true; }, ct, deadline);

    public static bool IsTransient(Exception e) => e switch
    {
        PostgresException pg => pg.IsTransient || pg.SqlState.StartsWith("57P", StringComparison.Ordinal) || pg.SqlState.StartsWith("08", StringComparison.Ordinal),
        NpgsqlException n => true,
        SocketException or TimeoutException or IOException => true,
        _ => e.InnerException is { } inner && IsTransient(inner),
    };
}
