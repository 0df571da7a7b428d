using System.Globalization;
using System.Text;
using BatchRunner.Core;
using BatchRunner.Runtime.Logs;
using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Api;

/// <summary>What a logs request asked for (<c>GET /api/v1/jobs/{id}/logs</c>).</summary>
/// <param name="Streams">The stored streams to serve: (name, head file), stdout before stderr.</param>
/// <param name="Ordered">Both streams interleaved in the order they were written (<c>stream=combined</c>), or one
/// stream with timestamps: served through the order index rather than byte for byte.</param>
public sealed record LogRequest(IReadOnlyList<(string Name, string HeadPath)> Streams, bool Ordered, bool Follow, bool Timestamps, bool Status);

/// <summary>
/// Writes a job's logs as text/plain. Plain (no <c>combined</c>, no timestamps) and not following: each stream as
/// stored, stdout then stderr; following: whatever the streams gain, as it arrives (both interleaved by arrival),
/// until the job reaches a final state, then the rest. Ordered: lines in the order they were written, each prefixed
/// with when it arrived if asked. Where a stream dropped bytes over its cap, one marker line says how many (a
/// follower that fell behind into a dropped stretch gets the marker and goes on with what is kept). With
/// <c>status=true</c> the body ends with a line saying how the job ended (or its state, when not following a
/// running job).
/// </summary>
public sealed class LogStreamResult(JobRecord requested, LogRequest request, JobStore store) : IResult
{
    private static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(200);

    public async Task ExecuteAsync(HttpContext http)
    {
        var ct = http.RequestAborted;
        http.Response.ContentType = "text/plain; charset=utf-8";
        http.Response.Headers.CacheControl = "no-store";
        var body = new LastByteStream(http.Response.Body);
        try
        {
            if (request.Follow)
            {
                http.Response.Headers["X-Accel-Buffering"] = "no";
                await http.Response.StartAsync(ct);
            }
            var job = request.Ordered ? await WriteOrderedAsync(body, ct) : await WritePlainAsync(body, ct);
            if (request.Status && job is not null) await WriteTrailerAsync(body, job, ct);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            // The client went away.
        }
    }

    /// <summary>Writes the streams; returns the job as last read (final when following), null if it is gone.</summary>
    private async Task<JobRecord?> WritePlainAsync(LastByteStream body, CancellationToken ct)
    {
        var cursors = request.Streams.Select(_ => new LogCursor()).ToArray();
        while (true)
        {
            // Read the state before draining: when it says final, the files are complete.
            var job = await CurrentAsync(ct);
            var final = job is null || JobState.IsFinal(job.State);
            long written = 0;
            for (int i = 0; i < request.Streams.Count; i++)
                written += await StoredLog.CopyAsync(request.Streams[i].HeadPath, request.Streams[i].Name, cursors[i], body, ct);
            if (written > 0) await body.FlushAsync(ct);
            if (final || !request.Follow) return job;
            await Task.Delay(PollInterval, ct);
        }
    }

    private async Task<JobRecord?> WriteOrderedAsync(LastByteStream body, CancellationToken ct)
    {
        var reader = new OrderedLogReader(request.Streams, request.Timestamps);
        while (true)
        {
            var job = await CurrentAsync(ct);
            var final = job is null || JobState.IsFinal(job.State);
            if (await reader.PumpAsync(body, final, ct)) await body.FlushAsync(ct);
            if (final || !request.Follow) return job;
            await Task.Delay(PollInterval, ct);
        }
    }

    /// <summary>The job as the request found it, or (following) as it is now.</summary>
    private async Task<JobRecord?> CurrentAsync(CancellationToken ct) =>
        request.Follow ? await store.GetAsync(requested.Id, ct) : requested;

    private static async Task WriteTrailerAsync(LastByteStream body, JobRecord job, CancellationToken ct)
    {
        var line = new StringBuilder(body.AtLineStart ? "" : "\n");
        line.Append(CultureInfo.InvariantCulture, $"[batchrunner: job {(JobState.IsFinal(job.State) ? job.State : "is " + job.State)}");
        if (job.Reason is { } reason) line.Append(CultureInfo.InvariantCulture, $", reason {reason}");
        if (job.ExitCode is { } code) line.Append(CultureInfo.InvariantCulture, $", exit code {code}");
        if (JobState.IsFinal(job.State) && !string.IsNullOrEmpty(job.Message)) line.Append(": ").Append(job.Message);
        line.Append("]\n");
        await body.WriteAsync(Encoding.UTF8.GetBytes(line.ToString()), ct);
        await body.FlushAsync(ct);
    }

    /// <summary>The response body, remembering whether what was written so far ends a line.</summary>
    private sealed class LastByteStream(Stream inner) : Stream
    {
        public bool AtLineStart { get; private set; } = true;

        public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken ct = default)
        {
            if (buffer.Length == 0) return;
            await inner.WriteAsync(buffer, ct);
            AtLineStart = buffer.Span[^1] == (byte)'\n';
        }

        public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken ct) =>
            WriteAsync(buffer.AsMemory(offset, count), ct).AsTask();

        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException("write asynchronously");
        public override Task FlushAsync(CancellationToken ct) => inner.FlushAsync(ct);
        public override void Flush() => inner.Flush();
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
    }
}
