using System.Diagnostics;
using BatchRunner.Native;
using Microsoft.Extensions.Logging;

namespace BatchRunner.Runtime.Logs;

/// <summary>
/// Carries a container's stdout and stderr from two FIFOs into their stored streams (<see cref="CappedLogWriter"/>),
/// one thread per container. The FIFOs are opened by path by the runtime's launcher only, so no other process of
/// this one inherits a write end, and the relay sees end of file once the container's last process is gone.
/// </summary>
/// <remarks>
/// Guarantees: the relay always drains. It reads whatever either pipe holds and never waits on anything but the
/// disk; when the disk refuses a write, that stream's further output is read and dropped (and the log counts as
/// truncated), and an unexpected error turns the relay into a plain drain, so a job never blocks on a full pipe.
/// Reads of both streams are numbered in the order the relay made them: that is the combined view's order, exact
/// between writes the relay could tell apart (a millisecond or so), arbitrary within one poll (as in Docker).
/// </remarks>
public sealed partial class LogRelay : IDisposable
{
    public const string StdoutFifoName = "stdout.fifo";
    public const string StderrFifoName = "stderr.fifo";
    private const int PipeBytes = 1 << 20;
    private const int ReadBytes = 256 * 1024;
    // Only the drain after a failure polls with a timeout; the relay itself waits for its pipes or its wake-up.
    private const int PollMs = 250;
    private static readonly TimeSpan StopTimeout = TimeSpan.FromSeconds(10);

    private readonly CappedLogWriter[] _writers;
    private readonly int[] _readFds = [-1, -1];
    private readonly int[] _keeperFds = [-1, -1];
    // An eventfd in the relay's poll: a stop wakes it at once. (It used to poll with a 250 ms timeout to look for the
    // stop: 4 wake-ups a second for every running job, 40 a second for 10.) Signalled and closed under _wakeGate only,
    // so a stop never writes to a number the relay closed and something else opened since.
    private readonly Lock _wakeGate = new();
    private int _wakeFd = -1;
    private readonly bool[] _failed = new bool[2];
    private readonly string[] _names = ["stdout", "stderr"];
    private readonly ILogger _logger;
    private readonly string _id;
    private readonly TaskCompletionSource _done = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _truncated = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly long _anchorMicros;
    private readonly long _anchorTimestamp;
    private long _seq;
    private int _lastStream = -1;
    private volatile bool _stopping;
    private int _disposed;
    private long _polls;

    private LogRelay(string id, string fifoDir, ContainerIo io, ILogger logger)
    {
        _id = id;
        _logger = logger;
        StdoutFifo = Path.Combine(fifoDir, StdoutFifoName);
        StderrFifo = Path.Combine(fifoDir, StderrFifoName);
        _anchorMicros = (DateTimeOffset.UtcNow - DateTimeOffset.UnixEpoch).Ticks / 10;
        _anchorTimestamp = Stopwatch.GetTimestamp();
        _writers = [new CappedLogWriter(io.StdoutPath, io.Limits), new CappedLogWriter(io.StderrPath, io.Limits)];
        _seq = Math.Max(_writers[0].LastSeq, _writers[1].LastSeq);
        if (_writers.Any(w => w.Truncated)) _truncated.TrySetResult();
    }

    /// <summary>
    /// Creates the FIFOs in <paramref name="fifoDir"/>, opens their read ends and a write end of its own for each
    /// (so that they do not read as ended before the container has opened them), and starts relaying into
    /// <paramref name="io"/>'s files. Call <see cref="DetachKeepers"/> once the container holds its own write ends.
    /// </summary>
    public static LogRelay Start(string id, string fifoDir, ContainerIo io, ILogger logger)
    {
        Directory.CreateDirectory(fifoDir);
        var relay = new LogRelay(id, fifoDir, io, logger);
        try
        {
            relay._wakeFd = Libc.EventFd();
            if (relay._wakeFd < 0) throw Error("eventfd", id);
            string[] fifos = [relay.StdoutFifo, relay.StderrFifo];
            for (int i = 0; i < 2; i++)
            {
                File.Delete(fifos[i]);
                if (Libc.mkfifo(fifos[i], 0b110_000_000) != 0) throw Error("mkfifo", fifos[i]);
                relay._readFds[i] = Libc.open(fifos[i], Libc.O_RDONLY | Libc.O_NONBLOCK | Libc.O_CLOEXEC);
                if (relay._readFds[i] < 0) throw Error("open", fifos[i]);
                relay._keeperFds[i] = Libc.open(fifos[i], Libc.O_WRONLY | Libc.O_NONBLOCK | Libc.O_CLOEXEC);
                if (relay._keeperFds[i] < 0) throw Error("open", fifos[i]);
                // A larger pipe lets a job write in bursts while the relay is busy on the disk; failure is harmless.
                Libc.SetPipeSize(relay._readFds[i], PipeBytes);
            }
            RelayThreads.Run(relay.Run);
            return relay;
        }
        catch
        {
            relay.CloseFds();
            foreach (var w in relay._writers) w.Dispose();
            relay.DeleteFifos();
            throw;
        }
    }

    public string StdoutFifo { get; }
    public string StderrFifo { get; }

    /// <summary>The relay's waits in poll(2) so far (for tests: a silent container wakes it for nothing).</summary>
    internal long Polls => Volatile.Read(ref _polls);

    /// <summary>Completes when both streams have ended (the container's processes are gone) and their bytes are stored.</summary>
    public Task Completion => _done.Task;

    /// <summary>Completes when either stream first dropped bytes (its cap, or a write the disk refused).</summary>
    public Task Truncated => _truncated.Task;

    /// <summary>Closes the relay's own write ends: from now on end of file means the container is done writing.</summary>
    public void DetachKeepers()
    {
        for (int i = 0; i < 2; i++)
            if (Interlocked.Exchange(ref _keeperFds[i], -1) is var fd and >= 0) Libc.close(fd);
    }

    /// <summary>
    /// Stops once the pipes hold nothing more (call when no process can write any more: the container was deleted),
    /// and waits for that, at most <paramref name="timeout"/>. Returns false when the relay did not finish in time.
    /// </summary>
    public async Task<bool> StopAsync(TimeSpan timeout)
    {
        DetachKeepers();
        RequestStop();
        try
        {
            await _done.Task.WaitAsync(timeout);
            return true;
        }
        catch (TimeoutException)
        {
            return false;
        }
    }

    /// <summary>Stops the relay (draining what the pipes hold) and removes the FIFOs.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        DetachKeepers();
        RequestStop();
        if (!_done.Task.Wait(StopTimeout)) LogStuck(_logger, _id);
        DeleteFifos();
    }

    private void RequestStop()
    {
        _stopping = true;
        lock (_wakeGate)
            if (_wakeFd >= 0) Libc.EventFdSignal(_wakeFd);
    }

    /// <summary>Polls both pipes and the wake-up (which it resets): false when only the wake-up or the timeout came.</summary>
    private bool PollPipes(Libc.PollFd[] fds, int timeoutMs)
    {
        int ready;
        Volatile.Write(ref _polls, _polls + 1); // the relay's thread only
        while ((ready = Libc.Poll(fds, timeoutMs)) < 0)
            if (Libc.Errno != Libc.EINTR) throw Error("poll", _id);
        if (fds[2].Revents != 0) Libc.EventFdDrain(fds[2].Fd);
        return fds[0].Revents != 0 || fds[1].Revents != 0;
    }

    private void Run()
    {
        var fds = new Libc.PollFd[3];
        // Pooled: a new 256 KiB buffer per container was a large-object heap allocation per job.
        var buffer = System.Buffers.ArrayPool<byte>.Shared.Rent(ReadBytes);
        try
        {
            for (int i = 0; i < 2; i++) fds[i] = new Libc.PollFd { Fd = _readFds[i], Events = Libc.POLLIN };
            fds[2] = new Libc.PollFd { Fd = _wakeFd, Events = Libc.POLLIN };
            while (fds[0].Fd >= 0 || fds[1].Fd >= 0)
            {
                // Read before the poll: a stop asked after this wakes the poll (the eventfd stays readable until reset).
                var stopping = _stopping;
                var piped = PollPipes(fds, stopping ? 0 : -1);
                // Stopping: whatever the pipes hold is read, then the relay ends even if some process kept a write end.
                if (!piped && stopping) break;
                for (int i = 0; i < 2; i++)
                {
                    if (fds[i].Fd < 0 || (fds[i].Revents & (Libc.POLLIN | Libc.POLLHUP | Libc.POLLERR | Libc.POLLNVAL)) == 0) continue;
                    var n = Libc.Read(fds[i].Fd, buffer);
                    if (n > 0) Deliver(i, buffer.AsSpan(0, (int)n));
                    else if (n == 0 || Libc.Errno is not (Libc.EAGAIN or Libc.EINTR)) fds[i].Fd = -1; // end of file (or a read error)
                }
            }
        }
        catch (Exception e)
        {
            // A bug must not block the job: read and drop whatever comes until the container is gone.
            LogRelayFailed(_logger, e, _id);
            Drain(fds, buffer);
        }
        finally
        {
            foreach (var w in _writers)
            {
                try { w.EndGroup(); } catch (IOException) { }
                w.Dispose();
            }
            CloseFds();
            System.Buffers.ArrayPool<byte>.Shared.Return(buffer);
            _done.TrySetResult();
        }
    }

    private void Deliver(int stream, ReadOnlySpan<byte> data)
    {
        var seq = ++_seq;
        var now = _anchorMicros + Stopwatch.GetElapsedTime(_anchorTimestamp).Ticks / 10;
        if (_failed[stream]) return;
        try
        {
            if (_lastStream >= 0 && _lastStream != stream && !_failed[_lastStream]) _writers[_lastStream].EndGroup();
            _lastStream = stream;
            _writers[stream].Write(data, seq, now);
            if (_writers[stream].Truncated) _truncated.TrySetResult();
        }
        catch (IOException e)
        {
            // Out of space, say: this stream's output is dropped from here on; the job goes on.
            _failed[stream] = true;
            _truncated.TrySetResult();
            LogWriteFailed(_logger, _id, _names[stream], e.Message);
        }
    }

    private void Drain(Libc.PollFd[] fds, byte[] buffer)
    {
        while (fds[0].Fd >= 0 || fds[1].Fd >= 0)
        {
            bool piped;
            try { piped = PollPipes(fds, PollMs); }
            catch (IOException) { piped = false; }
            if (!piped && _stopping) return;
            if (!piped) continue;
            for (int i = 0; i < 2; i++)
            {
                if (fds[i].Fd < 0 || fds[i].Revents == 0) continue;
                var n = Libc.Read(fds[i].Fd, buffer);
                if (n == 0 || (n < 0 && Libc.Errno is not (Libc.EAGAIN or Libc.EINTR))) fds[i].Fd = -1;
            }
        }
    }

    private void CloseFds()
    {
        DetachKeepers();
        for (int i = 0; i < 2; i++)
            if (Interlocked.Exchange(ref _readFds[i], -1) is var fd and >= 0) Libc.close(fd);
        lock (_wakeGate)
        {
            if (_wakeFd >= 0) Libc.close(_wakeFd);
            _wakeFd = -1;
        }
    }

    private void DeleteFifos()
    {
        foreach (var f in new[] { StdoutFifo, StderrFifo })
        {
            try { File.Delete(f); }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
        }
    }

    private static IOException Error(string call, string what) =>
        new($"{call} {what}: {Libc.ErrorText(Libc.Errno)}");

    [LoggerMessage(EventId = 3030, Level = LogLevel.Warning, Message = "Container {ContainerId}: storing its {Stream} failed ({Reason}); its further output is dropped")]
    private static partial void LogWriteFailed(ILogger logger, string containerId, string stream, string reason);

    [LoggerMessage(EventId = 3031, Level = LogLevel.Error, Message = "Container {ContainerId}: the log relay failed; the container's further output is dropped")]
    private static partial void LogRelayFailed(ILogger logger, Exception e, string containerId);

    [LoggerMessage(EventId = 3032, Level = LogLevel.Warning, Message = "Container {ContainerId}: the log relay did not finish; a process may still hold its output pipe")]
    private static partial void LogStuck(ILogger logger, string containerId);
}
