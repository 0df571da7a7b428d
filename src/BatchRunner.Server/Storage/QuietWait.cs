namespace BatchRunner.Server.Storage;

/// <summary>
/// Blocks a dedicated thread (a Hangfire worker's) until a task ends, without spinning first. <see cref="Task.Wait()"/>
/// and <c>GetAwaiter().GetResult()</c> on a task not yet done spin about 35 rounds before they sleep, most of them a
/// <c>sched_yield</c>: on a node's few cores that spinning takes the CPU from the very threads that would finish the task
/// (perf, 2026-12-01: 45 <c>sched_yield</c> per trivial job in the server, 26 of them from Hangfire's workers waiting for
/// their job and for a fetch turn).
/// </summary>
/// <remarks>For threads of their own only: a thread-pool thread blocked here is one less to run the task's continuations.</remarks>
public static class QuietWait
{
    /// <summary>Waits for <paramref name="task"/> and rethrows its own exception (not an <see cref="AggregateException"/>),
    /// as <c>GetAwaiter().GetResult()</c> does.</summary>
    public static void Wait(Task task)
    {
        if (!task.IsCompleted)
        {
            using var done = new ManualResetEventSlim(false, spinCount: 0);
            task.ConfigureAwait(false).GetAwaiter().UnsafeOnCompleted(done.Set);
            done.Wait();
        }
        task.GetAwaiter().GetResult();
    }

    /// <summary><see cref="Wait(Task)"/>, and the task's result.</summary>
    public static T Wait<T>(Task<T> task)
    {
        Wait((Task)task);
        return task.Result;
    }
}
