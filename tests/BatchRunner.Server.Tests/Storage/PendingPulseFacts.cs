using System.Runtime.ExceptionServices;
using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Tests.Storage;

/// <summary><see cref="PendingPulse"/>: at most one pulse pending, and a pulse on a pending one throws nothing.</summary>
public sealed class PendingPulseFacts
{
    [Fact]
    public async Task ManyPulses_LeaveOnePending()
    {
        using var pulses = new SemaphoreSlim(0, 1);
        for (var i = 0; i < 5; i++) PendingPulse.Release(pulses);

        Assert.Equal(1, pulses.CurrentCount);
        Assert.True(await pulses.WaitAsync(0));
        Assert.False(await pulses.WaitAsync(0));
    }

    /// <summary>A long poll's watch and a job's end pulse a semaphore that mostly has a pulse pending already: that
    /// threw (and caught) a SemaphoreFullException once per job, a stack walk each, before.</summary>
    [Fact]
    public void APulseOnAPendingOne_ThrowsNothing()
    {
        using var pulses = new SemaphoreSlim(0, 1);
        var thread = Environment.CurrentManagedThreadId;
        var thrown = 0;
        void Count(object? _, FirstChanceExceptionEventArgs e)
        {
            if (e.Exception is SemaphoreFullException && Environment.CurrentManagedThreadId == thread) thrown++;
        }
        AppDomain.CurrentDomain.FirstChanceException += Count;
        try
        {
            PendingPulse.Release(pulses);
            PendingPulse.Release(pulses);
            PendingPulse.Release(pulses);
        }
        finally
        {
            AppDomain.CurrentDomain.FirstChanceException -= Count;
        }
        Assert.Equal(0, thrown);
        Assert.Equal(1, pulses.CurrentCount);
    }
}
