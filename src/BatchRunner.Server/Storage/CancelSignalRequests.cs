using Npgsql;

namespace BatchRunner.Server.Storage;

/// <summary>The cancel requests <see cref="CancelSignal"/> wakes jobs for that come from outside BatchRunner's own API.</summary>
public static class CancelSignalRequests
{
    /// <summary>
    /// Sets the cancel flag of the starting or running job whose Hangfire message is <paramref name="hangfireJobId"/> (its
    /// node is woken by migration 0096's notification and stops it as for an API cancel). Nothing for a job that has not
    /// begun (the queue reconciler cancels those), has ended, or is already cancelled. True when the flag was set here.
    /// </summary>
    public static async Task<bool> RequestForHangfireJobAsync(NpgsqlConnection conn, string hangfireJobId, CancellationToken ct)
    {
        // The active-jobs partial index (node) where state in ('starting', 'running') keeps this to the running jobs.
        await using var cmd = new NpgsqlCommand("""
            update batchrunner.jobs set cancel_requested = true
             where state in ('starting', 'running') and hangfire_job_id = @h and not cancel_requested
            """, conn);
        cmd.Parameters.AddWithValue("h", hangfireJobId);
        return await cmd.ExecuteNonQueryAsync(ct) > 0;
    }
}
