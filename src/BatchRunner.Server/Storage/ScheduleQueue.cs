using System.ComponentModel;
using Hangfire;
using Hangfire.Server;
using Hangfire.Storage;

namespace BatchRunner.Server.Storage;

/// <summary>
/// What a schedule's Hangfire recurring job runs each time it fires: one run of the schedule, which is itself the
/// BatchRunner job (its message is this Hangfire job), or a skip. Implemented by the worker (Execution).
/// </summary>
public interface IScheduleRunner
{
    // As IJobPerformer: BatchRunner decides retries; Hangfire never runs a run again by itself.
    [AutomaticRetry(Attempts = 0, OnAttemptsExceeded = AttemptsExceededAction.Fail)]
    [JobDisplayName("{1}")]
    [DisplayName("{1}")]
    Task RunAsync(Guid scheduleId, string displayName, PerformContext? context, CancellationToken cancellationToken);
}

/// <summary>
/// Schedules as Hangfire recurring jobs (<c>batchrunner-schedule:ID</c>), so that they appear under the dashboard's
/// Recurring Jobs and Hangfire's recurring scheduler (on every worker, one firing per occurrence cluster-wide) fires them.
/// A paused schedule has no recurring job: it will not fire, and the Recurring Jobs page lists what will.
/// Hangfire's calls run on <see cref="HangfireCalls"/>' threads.
/// </summary>
public sealed class ScheduleQueue(IRecurringJobManager recurring, JobStorage storage, HangfireCalls calls)
{
    public const string Prefix = "batchrunner-schedule:";

    public static string RecurringId(Guid id) => Prefix + id;

    /// <summary>Adds or updates the schedule's recurring job (removes it while paused). Idempotent.</summary>
    public Task RegisterAsync(ScheduleRecord s) => calls.RunAsync(() =>
    {
        if (s.Paused)
        {
            recurring.RemoveIfExists(RecurringId(s.Id));
            return;
        }
        // Its firings go to the schedule's tenant's Hangfire queue, as the runs they start would (fair share).
        recurring.AddOrUpdate<IScheduleRunner>(RecurringId(s.Id), JobQueue.PhysicalQueue(s.Spec.Queue, s.Tenant), r => r.RunAsync(s.Id, s.Name, null, CancellationToken.None), s.Cron,
            new RecurringJobOptions { TimeZone = TimeZoneInfo.FindSystemTimeZoneById(s.TimeZone) });
    });

    public Task RemoveAsync(Guid id) => calls.RunAsync(() => recurring.RemoveIfExists(RecurringId(id)));

    /// <summary>The schedules that have a recurring job now, with its cron and whether it is being fired.</summary>
    public Task<IReadOnlyList<(Guid Id, string Cron, DateTime? NextExecution)>> RegisteredAsync() => calls.RunAsync<IReadOnlyList<(Guid, string, DateTime?)>>(() =>
    {
        using var connection = storage.GetConnection();
        return connection.GetRecurringJobs()
            .Where(r => r.Id.StartsWith(Prefix, StringComparison.Ordinal) && Guid.TryParse(r.Id.AsSpan(Prefix.Length), out _))
            .Select(r => (Guid.Parse(r.Id.AsSpan(Prefix.Length)), r.Cron, r.NextExecution))
            .ToList();
    });
}
