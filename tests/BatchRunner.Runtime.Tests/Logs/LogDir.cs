using System.Text;
using BatchRunner.Runtime.Logs;

namespace BatchRunner.Runtime.Tests.Logs;

/// <summary>A temporary job directory with a stdout and a stderr stream sharing one read sequence, as the relay writes them.</summary>
internal sealed class LogDir : IDisposable
{
    private long _seq;
    private int _last = -1;

    public LogDir(long maxBytes)
    {
        Dir = Path.Combine(Path.GetTempPath(), "br-logs-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(Dir);
        Limits = new LogLimits(maxBytes);
        Out = new CappedLogWriter(StdoutPath, Limits);
        Err = new CappedLogWriter(StderrPath, Limits);
    }

    public string Dir { get; }
    public LogLimits Limits { get; }
    public string StdoutPath => Path.Combine(Dir, "stdout.log");
    public string StderrPath => Path.Combine(Dir, "stderr.log");
    public CappedLogWriter Out { get; private set; }
    public CappedLogWriter Err { get; private set; }
    /// <summary>The time given to the next read (µs since the epoch); advanced 2 ms per read, so every read starts a group.</summary>
    public long NowMicros { get; set; } = 1_700_000_000_000_000;

    /// <summary>One read of the relay: stream 0 (stdout) or 1 (stderr).</summary>
    public void Read(int stream, string text) => Read(stream, Encoding.UTF8.GetBytes(text));

    public void Read(int stream, byte[] bytes)
    {
        var writers = new[] { Out, Err };
        if (_last >= 0 && _last != stream) writers[_last].EndGroup();
        _last = stream;
        writers[stream].Write(bytes, ++_seq, NowMicros);
        NowMicros += 2000;
    }

    /// <summary>Reopens both writers on the same files, as the next attempt (or a worker after a crash) does.</summary>
    public void Reopen(bool dispose = true)
    {
        if (dispose)
        {
            Out.Dispose();
            Err.Dispose();
        }
        Out = new CappedLogWriter(StdoutPath, Limits);
        Err = new CappedLogWriter(StderrPath, Limits);
        _seq = Math.Max(Out.LastSeq, Err.LastSeq);
        _last = -1;
    }

    public Task<string> StdoutTextAsync() => StoredLog.ReadAllTextAsync(StdoutPath, "stdout");

    public async Task<string> OrderedAsync(bool timestamps, params int[] streams)
    {
        var reader = Reader(timestamps, streams);
        using var ms = new MemoryStream();
        await reader.PumpAsync(ms, final: true, CancellationToken.None);
        return Encoding.UTF8.GetString(ms.ToArray());
    }

    public OrderedLogReader Reader(bool timestamps, params int[] streams)
    {
        var all = new[] { ("stdout", StdoutPath), ("stderr", StderrPath) };
        return new OrderedLogReader(streams.Length == 0 ? all : streams.Select(i => all[i]).ToArray(), timestamps);
    }

    public void Dispose()
    {
        Out.Dispose();
        Err.Dispose();
        Directory.Delete(Dir, recursive: true);
    }
}
