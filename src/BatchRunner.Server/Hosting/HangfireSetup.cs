using Hangfire;

namespace BatchRunner.Server.Hosting;

/// <summary>Process-wide Hangfire settings BatchRunner changes (Hangfire's global filters are statics).</summary>
internal static class HangfireSetup
{
    private static int _done;

    /// <summary>
    /// Removes Hangfire's continuation starter (<see cref="ContinuationsSupportAttribute"/>), once per process. BatchRunner's
    /// waiting jobs sit in Hangfire's Awaiting state, but BatchRunner moves them on itself (the workflow sweeper): its
    /// conditions are Slurm's (a dependency that failed is finished, where Hangfire's Failed is not final), a job may wait
    /// for several jobs (Hangfire's continuation has one parent), and a dependency may be an array, which runs as many
    /// Hangfire jobs. Left in place, Hangfire would start a waiting job as soon as the one job it names as parent
    /// succeeded, and refuse a parent that has no Hangfire job. BatchRunner creates no other continuation.
    /// </summary>
    public static void LeaveContinuationsToBatchRunner()
    {
        if (Interlocked.Exchange(ref _done, 1) == 1) return;
        GlobalJobFilters.Filters.Remove(typeof(ContinuationsSupportAttribute));
    }
}
