using Npgsql;

namespace BatchRunner.Server.Storage;

/// <summary>A job's webhook delivery, as its job document shows it (<c>notify</c>).</summary>
public sealed record NotificationRecord(string Url, string State, int Attempts, string? LastError, DateTimeOffset? DeliveredAt);

/// <summary>The states of a webhook delivery (public contract, like job states).</summary>
public static class NotificationState
{
    /// <summary>The job has not ended yet.</summary>
    public const string Waiting = "waiting";
    /// <summary>The job has ended; the call is due or waits for its next try.</summary>
    public const string Pending = "pending";
    public const string Delivered = "delivered";
    /// <summary>Every try failed; <c>lastError</c> says how the last one did.</summary>
    public const string Failed = "failed";
}

/// <summary>A delivery a sender has claimed: it is this sender's until <c>locked_until</c>.</summary>
public sealed record DueNotification(Guid JobId, string Url, int Attempt);

/// <summary>
/// Webhook deliveries in batchrunner.notifications. A row is created with its job (waiting); the database makes it
/// due when the job ends (trigger jobs_ended_notify, migration 0043). Senders on any node claim due rows with a lease
/// (<c>for update skip locked</c>: two senders never claim the same row), so a delivery survives the death of the
/// process that was sending it: its lease runs out and another sender claims it. Delivery is at least once.
/// </summary>
public sealed class NotificationStore(NpgsqlDataSource db)
{
    /// <summary>Claims up to <paramref name="max"/> due deliveries for <paramref name="lease"/>, counting this try.</summary>
    public async Task<IReadOnlyList<DueNotification>> ClaimDueAsync(int max, TimeSpan lease, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand("""
            update batchrunner.notifications n set locked_until = now() + @lease, attempts = n.attempts + 1
              from (select job_id from batchrunner.notifications
                     where state = 'pending' and next_attempt_at <= now() and (locked_until is null or locked_until < now())
                     order by next_attempt_at limit @max for update skip locked) due
             where n.job_id = due.job_id
            returning n.job_id, n.url, n.attempts
            """);
        cmd.Parameters.AddWithValue("lease", lease);
        cmd.Parameters.AddWithValue("max", max);
        var due = new List<DueNotification>();
        await using var rd = await cmd.ExecuteReaderAsync(ct);
        while (await rd.ReadAsync(ct)) due.Add(new DueNotification(rd.GetGuid(0), rd.GetString(1), rd.GetInt32(2)));
        return due;
    }

    /// <summary>How long until a pending delivery is due (its next try, or the end of another sender's claim on it); null
    /// when none is pending.</summary>
    public async Task<TimeSpan?> NextDueInAsync(CancellationToken ct)
    {
        await using var cmd = db.CreateCommand("""
            select extract(epoch from min(greatest(next_attempt_at, coalesce(locked_until, next_attempt_at))) - now())::float8
              from batchrunner.notifications where state = 'pending'
            """);
        return await cmd.ExecuteScalarAsync(ct) is double seconds ? TimeSpan.FromSeconds(Math.Max(0, seconds)) : null;
    }

    public async Task DeliveredAsync(Guid jobId, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand("""
            update batchrunner.notifications set state = 'delivered', delivered_at = now(), locked_until = null, last_error = null
             where job_id = @id and state = 'pending'
            """);
        cmd.Parameters.AddWithValue("id", jobId);
        await cmd.ExecuteNonQueryAsync(ct);
    }

    /// <summary>A try failed: the next one is due after <paramref name="retryAfter"/>, or (null) the delivery has failed for good.</summary>
    public async Task AttemptFailedAsync(Guid jobId, string error, TimeSpan? retryAfter, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand("""
            update batchrunner.notifications
               set last_error = @e, locked_until = null,
                   state = case when @retry::interval is null then 'failed' else 'pending' end,
                   next_attempt_at = case when @retry::interval is null then null else now() + @retry::interval end
             where job_id = @id and state = 'pending'
            """);
        cmd.Parameters.AddWithValue("id", jobId);
        cmd.Parameters.AddWithValue("e", error);
        cmd.Parameters.Add(new NpgsqlParameter("retry", NpgsqlTypes.NpgsqlDbType.Interval) { Value = retryAfter is { } r ? r : DBNull.Value });
        await cmd.ExecuteNonQueryAsync(ct);
    }
}
