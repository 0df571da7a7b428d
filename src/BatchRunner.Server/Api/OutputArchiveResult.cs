using System.IO.Compression;
using BatchRunner.Server.Storage;
using Microsoft.AspNetCore.Http.Features;
using SharpCompress.Common;
using SharpCompress.Writers;
using SharpCompress.Writers.Tar;
using SharpCompress.Writers.Zip;

namespace BatchRunner.Server.Api;

/// <summary>
/// A job's whole /outputs as one download, <c>outputs.zip</c> or <c>outputs.tar.gz</c>, written while it is sent:
/// entry by entry with SharpCompress' writers straight into the response (tar.gz through .NET's gzip, three times
/// faster than SharpCompress' own), nothing built in memory or on disk first. The entries are exactly the job's
/// recorded outputs, by their recorded paths: regular files only, never a symlink, so each entry's sha256 is the one
/// the outputs list shows (files are not written once the job has ended).
/// </summary>
public sealed class OutputArchiveResult(Guid jobId, string outputsDir, IReadOnlyList<OutputFile> files, OutputArchiveResult.Format format) : IResult
{
    public enum Format { Zip, TarGz }

    public const string ZipName = "outputs.zip";
    public const string TarGzName = "outputs.tar.gz";

    public async Task ExecuteAsync(HttpContext http)
    {
        var ct = http.RequestAborted;
        http.Response.ContentType = format == Format.Zip ? "application/zip" : "application/gzip";
        http.Response.Headers.ContentDisposition = $"attachment; filename=\"job-{jobId:N}-{(format == Format.Zip ? ZipName : TarGzName)}\"";
        // Sent as it is made: no proxy buffering, no response buffering.
        http.Response.Headers["X-Accel-Buffering"] = "no";
        http.Features.Get<IHttpResponseBodyFeature>()?.DisableBuffering();
        var body = http.Response.Body;
        if (format == Format.Zip)
        {
            // Deflate, and Zip64 records for entries past 4 GiB; local headers carry data descriptors (the sizes come
            // after each entry's data), which is what lets the writer stream without seeking back.
            var options = new ZipWriterOptions(CompressionType.Deflate) { LeaveStreamOpen = true, UseZip64 = files.Any(f => f.Size >= uint.MaxValue) };
            await using var writer = (IAsyncWriter)await ZipWriter.OpenAsyncWriter(body, options, ct);
            await WriteEntriesAsync(writer, ct);
        }
        else
        {
            await using var gzip = new GZipStream(body, CompressionLevel.Fastest, leaveOpen: true);
            await using (var writer = (IAsyncWriter)await TarWriter.OpenAsyncWriter(gzip, new TarWriterOptions(CompressionType.None, finalizeArchiveOnClose: true) { LeaveStreamOpen = true }, ct))
                await WriteEntriesAsync(writer, ct);
        }
    }

    private async Task WriteEntriesAsync(IAsyncWriter writer, CancellationToken ct)
    {
        foreach (var f in files)
        {
            // Opened beneath the outputs directory without following any link, as a single output is served: a symlink
            // planted since the listing ends the archive (its status was sent already) rather than being followed.
            await using var source = OutputScanner.OpenOutput(outputsDir, f.Path)
                ?? throw new IOException($"output \"{f.Path}\" is no longer the regular file it was");
            await writer.WriteAsync(f.Path, source, File.GetLastWriteTimeUtc(source.SafeFileHandle), ct);
        }
    }
}
