using BatchRunner.Core;
using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Api;

/// <summary>
/// Writes a job's log files as text/plain. Without follow: stdout then stderr as they are now. With
/// follow: whatever the files gain is written as it arrives (both streams interleaved by arrival) until
/// the job reaches a final state, then the rest.
/// </summary>
public sealed class LogStreamResult(Guid jobId, IReadOnlyList<string> files, bool follow, JobStore store) : IResult
{
    private static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(200);

    public async Task ExecuteAsync(HttpContext http)
    {
        var ct = http.RequestAborted;
        http.Response.ContentType = "text/plain; charset=utf-8";
        http.Response.Headers.CacheControl = "no-store";
        var body = http.Response.Body;
        if (!follow)
        {
            foreach (var f in files)
            {
                if (!File.Exists(f)) continue;
                await using var fs = Open(f);
                await fs.CopyToAsync(body, ct);
            }
            return;
        }

        http.Response.Headers["X-Accel-Buffering"] = "no";
        await http.Response.StartAsync(ct);
        var offsets = new long[files.Count];
        var buffer = new byte[64 * 1024];
        try
        {
            while (!ct.IsCancellationRequested)
            {
                // Read the state before draining: when it says final, the files are complete.
                var state = await store.GetStateAsync(jobId, ct);
                var final = state is null || JobState.IsFinal(state);
                bool any = false;
                for (int i = 0; i < files.Count; i++)
                {
                    if (!File.Exists(files[i])) continue;
                    await using var fs = Open(files[i]);
                    fs.Seek(offsets[i], SeekOrigin.Begin);
                    int n;
                    while ((n = await fs.ReadAsync(buffer, ct)) > 0)
                    {
                        await body.WriteAsync(buffer.AsMemory(0, n), ct);
                        offsets[i] += n;
                        any = true;
                    }
                }
                if (any) await body.FlushAsync(ct);
                if (final) return;
                await Task.Delay(PollInterval, ct);
            }
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            // The client went away.
        }
    }

    private static FileStream Open(string path) =>
        new(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, 1 << 16, FileOptions.Asynchronous | FileOptions.SequentialScan);
}
