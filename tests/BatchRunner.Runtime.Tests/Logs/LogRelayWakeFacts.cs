using BatchRunner.Native;
using BatchRunner.Runtime.Logs;
using BatchRunner.Testing;
using Microsoft.Extensions.Logging.Abstractions;

namespace BatchRunner.Runtime.Tests.Logs;

/// <summary>The relay's waits, over real FIFOs that the test writes as a container would (no runtime needed).</summary>
public sealed class LogRelayWakeFacts : IDisposable
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(20);
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "br-relay-" + Guid.NewGuid().ToString("N")[..8]);

    public LogRelayWakeFacts() => Directory.CreateDirectory(_dir);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private (LogRelay Relay, int[] WriteFds) StartWithAContainer()
    {
        var io = new ContainerIo(Path.Combine(_dir, "stdout.log"), Path.Combine(_dir, "stderr.log"));
        var relay = LogRelay.Start("wake-test", Path.Combine(_dir, "fifos"), io, NullLogger.Instance);
        // The container's own write ends, then the relay lets go of its keepers.
        var fds = new[] { relay.StdoutFifo, relay.StderrFifo }.Select(f => Libc.open(f, Libc.O_WRONLY | Libc.O_NONBLOCK | Libc.O_CLOEXEC)).ToArray();
        Assert.All(fds, fd => Assert.True(fd >= 0));
        relay.DetachKeepers();
        return (relay, fds);
    }

    private static void Write(int fd, string text)
    {
        var bytes = System.Text.Encoding.UTF8.GetBytes(text);
        Assert.Equal(bytes.Length, (int)Libc.write(fd, bytes));
    }

    /// <summary>A container that writes nothing costs its relay no wake-up: the relay used to poll every 250 ms to look
    /// for a stop (4 wake-ups a second for every running job).</summary>
    [Fact]
    public async Task ASilentContainer_WakesItsRelayForNothing()
    {
        var (relay, fds) = StartWithAContainer();
        try
        {
            Write(fds[0], "hello\n");
            var stdout = Path.Combine(_dir, "stdout.log");
            await Poll.UntilAsync(() => Task.FromResult(File.Exists(stdout) ? new FileInfo(stdout).Length : 0), n => n > 0, Deadline, "the line stored");
            await Task.Delay(100); // the relay back in its poll
            var polls = relay.Polls;

            await Task.Delay(700);

            Assert.Equal(polls, relay.Polls);
        }
        finally
        {
            foreach (var fd in fds) Libc.close(fd);
            relay.Dispose();
        }
    }

    /// <summary>A stop wakes the relay at once, and it keeps what the pipes held, also while some process still holds a
    /// write end (a stray of the container's): with nothing left to read, it ends.</summary>
    [Fact]
    public async Task AStop_EndsTheRelayAtOnce_WithWhatThePipesHeldStored_WhileAStrayHoldsAWriteEnd()
    {
        var (relay, fds) = StartWithAContainer();
        try
        {
            await Task.Delay(100); // the relay in its poll, waiting
            Write(fds[1], "last words\n");

            Assert.True(await relay.StopAsync(TimeSpan.FromSeconds(10)));
            Assert.True(relay.Completion.IsCompleted);
            Assert.Contains("last words", await File.ReadAllTextAsync(Path.Combine(_dir, "stderr.log")));
        }
        finally
        {
            foreach (var fd in fds) Libc.close(fd);
            relay.Dispose();
        }
    }
}
