using System.Diagnostics;
using System.IO.Compression;
using BatchRunner.Testing;
using static BatchRunner.Bench.PullBench;

namespace BatchRunner.Bench;

/// <summary>
/// The pull rows of `summary` (issue 14): cold pull + unpack of the python+numpy image against <c>skopeo copy</c> +
/// <c>umoci raw unpack</c>; the floor (decompressing plus writing the files) beside it; and a multi-layer image with
/// its layers unpacked in parallel against one at a time.
/// </summary>
/// <remarks>
/// Everything writes to one fresh <see cref="ScratchFs"/> (see there why not the host's filesystem), with <c>sync</c>
/// before each measurement; contenders alternate their order each round, and the figures are medians.
/// </remarks>
internal static class PullSummary
{
    private const string Area = "pull";
    private const string LayeredTag = "numpy-layers";

    public static async Task AddRowsAsync(SummaryTable table, int rounds = 3)
    {
        try
        {
            await AddAsync(table, rounds);
        }
        catch (Exception e)
        {
            table.Failed(Area, "cold pull + unpack, python+numpy", e);
        }
    }

    private static async Task AddAsync(SummaryTable table, int rounds)
    {
        var layout = await NumpyImage.EnsureLayoutAsync(CacheDir, Tag);
        var layerCount = await NumpyImage.EnsureLayeredAsync(CacheDir, Tag, LayeredTag);
        await using var registry = await TestRegistry.StartAsync();
        var single = $"{registry.Host}/bench/numpy:1";
        var layered = $"{registry.Host}/bench/numpy-layers:1";
        foreach (var (tag, reference) in new[] { (Tag, single), (LayeredTag, layered) })
            await ExternalCommand.RunAsync("skopeo", ["--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false", $"oci:{layout}:{tag}", $"docker://{reference}"],
                timeout: TimeSpan.FromMinutes(5));
        var blob = LargestBlob(layout);
        // The uncompressed tar for the writing-only pass, in memory so that reading it costs nothing.
        var tar = $"/dev/shm/batchrunner-bench-{Environment.ProcessId}.tar";
        await using var scratch = await ScratchFs.CreateAsync(CacheDir, ScratchBytes);
        var work = Path.Combine(scratch.MountPoint, "runs");
        Directory.CreateDirectory(work);
        try
        {
            await Shell($"gzip -dc < {blob} > {tar}");
            var br = new List<Sample>();
            var sk = new List<Sample>();
            var floor = new List<double>();
            var writeOnly = new List<double>();
            var inflate = new List<double>();
            var gunzip = new List<double>();
            var parallel = new List<double>();
            var sequential = new List<double>();
            for (var round = 1; round <= rounds; round++)
            {
                var steps = new List<Func<Task>>
                {
                    async () => br.Add(await ColdAsync(single, work)),
                    async () => sk.Add(await SkopeoUmociAsync(single, work)),
                    async () => floor.Add(await TimedShellAsync(work, dir => $"gzip -dc < {blob} | tar -x -C {dir}")),
                    async () => writeOnly.Add(await TimedShellAsync(work, dir => $"tar -x -C {dir} < {tar}")),
                    async () => parallel.Add((await ColdAsync(layered, work)).TotalMs),
                    async () => sequential.Add((await ColdAsync(layered, work, maxParallelUnpacks: 1)).TotalMs),
                };
                // Alternate the order so that no contender always runs right after the same other one.
                if (round % 2 == 0) steps.Reverse();
                foreach (var step in steps) await step();
                inflate.Add(InflateToNull(blob));
                gunzip.Add(await TimedShellAsync(null, _ => $"gzip -dc < {blob} > /dev/null"));
                Console.WriteLine($"pull round {round}: BatchRunner {br[^1].TotalMs:0} ms ({br[^1].FetchMs:0} download / {br[^1].UnpackMs:0} unpack after it, " +
                                  $"{br[^1].FlushMs:0} flush), skopeo+umoci {sk[^1].TotalMs:0} ms, gzip -dc | tar -x {floor[^1]:0} ms, tar -x {writeOnly[^1]:0} ms, " +
                                  $"zlib-ng inflate {inflate[^1]:0} ms, gzip -dc {gunzip[^1]:0} ms; {layerCount} layers parallel {parallel[^1]:0} ms, sequential {sequential[^1]:0} ms");
            }

            var brMs = Median(br.Select(s => s.TotalMs));
            var skMs = Median(sk.Select(s => s.TotalMs));
            var floorMs = Median(floor);
            var note = $"{rounds} rounds, medians, fresh ext4";
            table.Add(new SummaryRow(Area, $"cold pull + unpack, python+numpy (86 MB gzip, 228 MB, 9,928 files; {note})",
                $"{SummaryTable.Ms(brMs, 0)} ms (download {SummaryTable.Ms(Median(br.Select(s => s.FetchMs)), 0)}, flush {SummaryTable.Ms(Median(br.Select(s => s.FlushMs)), 0)})",
                $"`skopeo copy` + `umoci raw unpack`: {SummaryTable.Ms(skMs, 0)} ms", brMs / skMs, "≤ 0.5×", brMs / skMs <= 0.5));
            table.Add(new SummaryRow(Area, "floor: decompress + write the files, `gzip -dc` piped into `tar -x` (two processes, no flush)",
                $"{SummaryTable.Ms(brMs, 0)} ms (with verification and flush)", $"{SummaryTable.Ms(floorMs, 0)} ms", brMs / floorMs, "report", null));
            table.Add(new SummaryRow(Area, "floor parts: decompress to nothing / write the files from the plain tar (`tar -x`)",
                $"zlib-ng (.NET GZipStream): {SummaryTable.Ms(Median(inflate), 0)} ms", $"`gzip -dc`: {SummaryTable.Ms(Median(gunzip), 0)} ms; `tar -x`: {SummaryTable.Ms(Median(writeOnly), 0)} ms",
                null, "report", null));
            var parMs = Median(parallel);
            var seqMs = Median(sequential);
            table.Add(new SummaryRow(Area, $"cold pull, the same files in {layerCount} layers: parallel unpack vs one layer at a time",
                $"{SummaryTable.Ms(parMs, 0)} ms", $"MaxParallelUnpacks = 1: {SummaryTable.Ms(seqMs, 0)} ms", parMs / seqMs, "< 1×", parMs < seqMs));
        }
        finally
        {
            File.Delete(tar);
        }
    }

    /// <summary>The image's one big blob: its layer.</summary>
    private static string LargestBlob(string layout) =>
        new DirectoryInfo(Path.Combine(layout, "blobs", "sha256")).EnumerateFiles().MaxBy(f => f.Length)!.FullName;

    /// <summary>Runs a shell command (writing into a fresh directory under <paramref name="work"/>, if given) and returns its wall time.</summary>
    private static async Task<double> TimedShellAsync(string? work, Func<string, string> command)
    {
        var dir = work is null ? "" : Path.Combine(work, "sh-" + Guid.NewGuid().ToString("N")[..8]);
        if (work is not null) Directory.CreateDirectory(dir);
        await SyncAsync();
        var sw = Stopwatch.StartNew();
        await Shell(command(dir));
        var ms = sw.Elapsed.TotalMilliseconds;
        if (work is not null) Directory.Delete(dir, recursive: true);
        return ms;
    }

    private static Task<string> Shell(string command) => ExternalCommand.RunAsync("sh", ["-c", command], timeout: TimeSpan.FromMinutes(5));

    /// <summary>.NET's GZipStream (zlib-ng) into a 1 MiB buffer and nowhere else: BatchRunner's decompression floor.</summary>
    private static double InflateToNull(string blob)
    {
        var sw = Stopwatch.StartNew();
        using var file = new FileStream(blob, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        using var gzip = new GZipStream(file, CompressionMode.Decompress);
        var buffer = new byte[1 << 20];
        while (gzip.Read(buffer) > 0) { }
        return sw.Elapsed.TotalMilliseconds;
    }
}
