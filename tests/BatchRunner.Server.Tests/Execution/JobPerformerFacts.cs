using BatchRunner.Server.Execution;

namespace BatchRunner.Server.Tests.Execution;

/// <summary>The worker thread's wait for a delivery's task (<see cref="JobPerformer.SleepUntilCompleted"/>).</summary>
public sealed class JobPerformerFacts
{
    [Fact]
    public async Task SleepUntilCompleted_ReturnsOnlyOnceTheTaskHasCompleted()
    {
        var finish = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var returned = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var waiter = new Thread(() =>
        {
            JobPerformer.SleepUntilCompleted(finish.Task);
            returned.SetResult();
        });
        waiter.Start();

        // Still waiting a while later, and asleep (not running) meanwhile.
        await Task.Delay(300);
        Assert.False(returned.Task.IsCompleted);
        Assert.Equal(ThreadState.WaitSleepJoin, waiter.ThreadState & ThreadState.WaitSleepJoin);
        finish.SetResult();
        await returned.Task.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.True(waiter.Join(TimeSpan.FromSeconds(10)));
    }

    [Fact]
    public void SleepUntilCompleted_LeavesAFailureOrCancellationToTheTask()
    {
        var failed = Task.Run(async () =>
        {
            await Task.Delay(50);
            throw new InvalidOperationException("the job failed");
        });
        JobPerformer.SleepUntilCompleted(failed);
        Assert.Equal("the job failed", Assert.IsType<InvalidOperationException>(failed.Exception!.InnerException).Message);

        using var cts = new CancellationTokenSource(50);
        var cancelled = Task.Delay(Timeout.Infinite, cts.Token);
        JobPerformer.SleepUntilCompleted(cancelled);
        Assert.True(cancelled.IsCanceled);
        JobPerformer.SleepUntilCompleted(Task.CompletedTask);
    }
}
