namespace BatchRunner.Cli.Http;

/// <summary>Copies a live stream (a followed log) chunk by chunk, flushing each, so output shows as soon as it arrives.</summary>
internal static class LiveCopy
{
    public static async Task CopyAsync(Stream from, Stream to, CancellationToken ct)
    {
        var buffer = new byte[16 * 1024];
        int n;
        while ((n = await from.ReadAsync(buffer, ct)) > 0)
        {
            await to.WriteAsync(buffer.AsMemory(0, n), ct);
            await to.FlushAsync(ct);
        }
    }
}
