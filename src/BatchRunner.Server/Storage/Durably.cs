namespace BatchRunner.Server.Storage;

/// <summary>
/// Writes that must not be lost when the database restarts under a running job: retried with back-off
/// while <see cref="DatabaseErrors.IsOutage"/> says the database is away, until it answers again (or the
/// deadline passes). Any other error is thrown at once.
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
            catch (Exception e) when (DatabaseErrors.IsOutage(e) && DateTime.UtcNow < until && !ct.IsCancellationRequested)
            {
                await Task.Delay(delay, ct);
                delay = TimeSpan.FromMilliseconds(Math.Min(delay.TotalMilliseconds * 2, 2000));
            }
        }
    }

    public static Task RunAsync(Func<CancellationToken, Task> write, CancellationToken ct = default, TimeSpan? deadline = null) =>
        RunAsync(async c => { await write(c); return true; }, ct, deadline);
}
