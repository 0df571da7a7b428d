using Hangfire;

namespace BatchRunner.Server.Hosting;

/// <summary>Process-wide Hangfire settings BatchRunner changes (Hangfire's global filters are statics).</summary>
internal static class HangfireSetup
{
    private static int _done;

    /// <summary>
    /// Removes Hangfire's culture capture (see below) and its continuation starter (<see cref="ContinuationsSupportAttribute"/>), once per process. BatchRunner's
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
        // Nor does a job need the submitting thread's culture: the worker runs a container, whose environment is the job's
        // own. Hangfire's CaptureCultureAttribute would store it as a job parameter with every message, one more statement
        // per submission (a message stored with one still runs: the parameter is ignored).
        GlobalJobFilters.Filters.Remove(typeof(CaptureCultureAttribute));
        // Jobs scheduled here are enqueued when due, not at the delayed-job scheduler's next poll (see DueScheduledJobs).
        GlobalJobFilters.Filters.Add(DueScheduledJobs.Instance);
        // A processing job deleted in the dashboard is cancelled (see DashboardDeleteCancels).
        GlobalJobFilters.Filters.Add(DashboardDeleteCancels.Instance);
        // A new message's id is recorded on its job in the transaction that creates it (see HangfireMessageIds).
        GlobalJobFilters.Filters.Add(Storage.HangfireMessageIds.Filter);
    }
}
