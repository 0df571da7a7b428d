using System.Net.Sockets;
using BatchRunner.Server.Execution;
using Hangfire.States;

namespace BatchRunner.Server.Tests.Execution;

/// <summary>Which failed deliveries go back to Hangfire's queue or schedule instead of failing for good.</summary>
public sealed class RescheduleFilterFacts
{
    [Fact]
    public void Replacement_DeliversAgainShortly_WhenHangfiresOwnFilterFailedOnABrokenDatabaseConnection()
    {
        // What a postmaster killed under a running worker produced: Hangfire's CaptureCultureAttribute read a
        // job parameter on a pooled connection to the dead server, before the job method ran.
        var e = new InvalidOperationException("Could not get a value of the job parameter `CurrentCulture`. See inner exception for details.",
            new Npgsql.NpgsqlException("Exception while writing to stream", new IOException("Unable to write data to the transport connection: Broken pipe.",
                new SocketException(32))));
        var state = Assert.IsType<ScheduledState>(RescheduleFilter.Replacement(e, "default"));
        Assert.True(state.EnqueueAt - DateTime.UtcNow <= RescheduleFilter.OutageRetryDelay);
        Assert.Contains("the database was away", state.Reason);
    }

    [Fact]
    public void Replacement_KeepsTheFailure_WhenItIsNotTheDatabasesOrIsPermanent()
    {
        Assert.Null(RescheduleFilter.Replacement(new IOException("disk full"), "default"));
        Assert.Null(RescheduleFilter.Replacement(new InvalidOperationException("a bug"), "default"));
        Assert.Null(RescheduleFilter.Replacement(new Npgsql.PostgresException("duplicate key", "ERROR", "ERROR", "23505"), "default"));
    }

    [Fact]
    public void Replacement_EnqueuesOrSchedules_AJobRescheduleException()
    {
        Assert.Equal("gpu", Assert.IsType<EnqueuedState>(RescheduleFilter.Replacement(new JobRescheduleException("node full"), "gpu")).Queue);
        Assert.IsType<ScheduledState>(RescheduleFilter.Replacement(new JobRescheduleException("back-off", TimeSpan.FromSeconds(5)), "gpu"));
    }
}
