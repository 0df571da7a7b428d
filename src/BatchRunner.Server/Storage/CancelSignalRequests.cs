using System.Runtime.CompilerServices;
using Hangfire;
using Npgsql;

namespace BatchRunner.Server.Storage;

/// <summary>The cancel requests <see cref="CancelSignal"/> wakes jobs for that come from outside BatchRunner's own API.</summary>
public static class CancelSignalRequests
{
    private static readonly ConditionalWeakTable<JobStorage, NpgsqlDataSource> Databases = [];

    /// <summary>Says which database holds the jobs of a host's Hangfire storage (Hangfire's filters are process-wide; tests
    /// run several hosts in one process).</summary>
    public static void Register(IServiceProvider services) =>
        Databases.AddOrUpdate(services.GetRequiredService<JobStorage>(), services.GetRequiredService<NpgsqlDataSource>());

    /// <summary>
    /// Sets the cancel flag of the starting or running job whose Hangfire message is <paramref name="hangfireJobId"/> in
    /// <paramref name="storage"/>'s database (its node is woken by migration 0096's notification and stops it as for an
    /// API cancel). Nothing for a job that has not begun (the queue reconciler cancels those), has ended, or is already
    /// cancelled, nor for a storage no host registered. True when the flag was set here.
    /// </summary>
    public static async Task<bool> RequestForHangfireJobAsync(JobStorage storage, string hangfireJobId, CancellationToken ct)
    {
        if (!Databases.TryGetValue(storage, out var db)) return false;
        // The active-jobs partial index (node) where state in ('starting', 'running') keeps this to the running jobs.
        await using var cmd = db.CreateCommand("""
            update batchrunner.jobs set cancel_requested = true
             where state in ('starting', 'running') and hangfire_job_id = @h and not cancel_requested
            """);
        cmd.Parameters.AddWithValue("h", hangfireJobId);
        return await cmd.ExecuteNonQueryAsync(ct) > 0;
    }
}
