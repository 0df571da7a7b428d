using Hangfire;
using Hangfire.States;

namespace BatchRunner.Server.Storage;

/// <summary>
/// Hangfire's state of an array's parent while its children run: it runs no container itself, so it is neither
/// Enqueued nor Processing (which Hangfire would count as work waiting for or held by a worker). Not final; the
/// parent goes to Succeeded, Failed or Deleted when its last child has ended (<see cref="JobQueue.SyncStatesAsync"/>).
/// </summary>
public sealed class ArrayParentState(int size, int parallelism) : IState
{
    public const string StateName = "Array";

    public int Size { get; } = size;
    public int Parallelism { get; } = parallelism;
    public string Name => StateName;
    public string? Reason { get; set; } = $"{size} children, at most {parallelism} at once";
    public bool IsFinal => false;
    public bool IgnoreJobLoadException => false;

    public Dictionary<string, string> SerializeData() => new()
    {
        ["Size"] = Size.ToString(System.Globalization.CultureInfo.InvariantCulture),
        ["Parallelism"] = Parallelism.ToString(System.Globalization.CultureInfo.InvariantCulture),
    };
}

/// <summary>
/// How a BatchRunner job that failed appears in Hangfire's Failed list: its reason and message as the exception's
/// message ("exit_code: exited with code 3"). Thrown by the worker once the failure is recorded (Hangfire's own retry is
/// off for these jobs: BatchRunner's retry policy already decided), or set by <see cref="JobQueue"/> for jobs that failed
/// outside a worker (an array whose children failed, a job whose node was lost for good).
/// </summary>
public sealed class JobFailedException(string? reason, string? message, string? context = null)
    : Exception((context is null ? "" : context + ": ") + $"{reason ?? "failed"}: {message ?? "no message"}")
{
    public string? Reason { get; } = reason;
}

/// <summary>The Hangfire states that mirror BatchRunner's, in one place: what each BatchRunner state looks like there.</summary>
public static class HangfireStates
{
    /// <summary>The state Reason Hangfire shows beside a mirrored one.</summary>
    public const string MirrorReason = "BatchRunner job";

    public static FailedState Failed(string? reason, string? message, string? context = null) =>
        new(new JobFailedException(reason, message, context)) { Reason = FailedReason(reason) };

    /// <summary>The state Reason of a BatchRunner job's Failed state.</summary>
    public static string FailedReason(string? reason) => $"{MirrorReason} failed ({reason ?? "failed"})";

    public static DeletedState Deleted(string? reason, string? message) =>
        new(new Hangfire.ExceptionInfo(typeof(JobFailedException).FullName!, $"{reason ?? "cancelled"}: {message ?? "cancelled"}", null))
        {
            Reason = $"{MirrorReason} cancelled ({reason ?? "cancelled"}): {message}",
        };

    public static SucceededState Succeeded(string? message) => new(null, 0, 0) { Reason = $"{MirrorReason} succeeded: {message}" };

    /// <summary>Waiting for dependencies: Hangfire's Awaiting, whose parent is one of them (a Hangfire job id when it has one).</summary>
    public static AwaitingState Awaiting(string parent, string queue, string? message) =>
        new(parent, new EnqueuedState(queue), JobContinuationOptions.OnAnyFinishedState) { Reason = message ?? "waiting for dependencies" };
}
