using System.Collections.Concurrent;
using System.Diagnostics;
using BatchRunner.Oci;
using BatchRunner.Oci.Store;
using BatchRunner.Testing;
using Microsoft.Extensions.Logging;

namespace BatchRunner.Bench;

/// <summary>
/// Cold pull + unpack of a one-layer Python+numpy image from a local registry: BatchRunner's ImageStore against
/// <c>skopeo copy</c> + <c>umoci raw unpack</c>, alternating which goes first, plus warm (cached) pulls.
/// </summary>
/// <remarks>
/// The page cache cannot be dropped reliably here, so "cold" means a fresh store directory, not a cold disk cache:
/// the registry's blob is in memory for both contenders. <c>sync</c> runs before each measurement so that one
/// run's writeback is not billed to the next. Everything is written to a fresh <see cref="ScratchFs"/> (see there why).
/// </remarks>
internal static class PullBench
{
    // The bench's registry is on 127.0.0.1, which the default policy refuses.
    internal static readonly BatchRunner.Oci.Registry.RegistryPolicy LocalRegistries = new(["*", "127.0.0.1"]);

    internal const string CacheDir = "/var/tmp/batchrunner-bench";
    internal const string Tag = "numpy";
    internal const long ScratchBytes = 8L << 30;

    public static async Task<int> RunAsync(int rounds)
    {
        var layout = await NumpyImage.EnsureLayoutAsync(CacheDir, Tag);
        await using var registry = await TestRegistry.StartAsync();
        var reference = $"{registry.Host}/bench/numpy:1";
        await ExternalCommand.RunAsync("skopeo", ["--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false", $"oci:{layout}:{Tag}", $"docker://{reference}"],
            timeout: TimeSpan.FromMinutes(5));
        Console.WriteLine($"image {reference} pushed from {layout}");

        await using var scratch = await ScratchFs.CreateAsync(CacheDir, ScratchBytes);
        var work = Path.Combine(scratch.MountPoint, "runs");
        Directory.CreateDirectory(work);
        var br = new List<Sample>();
        var sk = new List<Sample>();
        var warm = new List<double>();
        var restarted = new List<double>();
        try
        {
            for (var round = 1; round <= rounds; round++)
            {
                // Alternate the order so neither contender always runs on the other's warm caches.
                if (round % 2 == 1)
                {
                    br.Add(await BatchRunnerAsync(reference, work, warm, restarted));
                    sk.Add(await SkopeoUmociAsync(reference, work));
                }
                else
                {
                    sk.Add(await SkopeoUmociAsync(reference, work));
                    br.Add(await BatchRunnerAsync(reference, work, warm, restarted));
                }
                Console.WriteLine($"round {round}: BatchRunner {br[^1].TotalMs:0} ms ({br[^1].FetchMs:0} download / {br[^1].UnpackMs:0} unpack), " +
                                  $"skopeo+umoci {sk[^1].TotalMs:0} ms ({sk[^1].FetchMs:0} + {sk[^1].UnpackMs:0}), warm {warm[^1]:0.000} ms");
            }
        }
        finally
        {
            Directory.Delete(work, recursive: true);
        }

        var brMedian = Median(br.Select(s => s.TotalMs));
        var skMedian = Median(sk.Select(s => s.TotalMs));
        Console.WriteLine();
        Console.WriteLine($"| {$"medians of {rounds} rounds",-35} | total ms | download ms | unpack ms | of which flush ms |");
        Console.WriteLine("|-------------------------------------|---------:|------------:|----------:|------------------:|");
        Console.WriteLine($"| BatchRunner cold pull+unpack        | {brMedian,8:0} | {Median(br.Select(s => s.FetchMs)),11:0} | {Median(br.Select(s => s.UnpackMs)),9:0} | {Median(br.Select(s => s.FlushMs)),17:0} |");
        Console.WriteLine($"| skopeo copy + umoci raw unpack      | {skMedian,8:0} | {Median(sk.Select(s => s.FetchMs)),11:0} | {Median(sk.Select(s => s.UnpackMs)),9:0} | {"none",17} |");
        Console.WriteLine($"| ratio BatchRunner/(skopeo+umoci)    | {brMedian / skMedian,8:0.00} |             |           |");
        Console.WriteLine($"| BatchRunner warm pull (same store)  | {Median(warm),8:0.000} |             |           |");
        Console.WriteLine($"| BatchRunner warm pull (new process) | {Median(restarted),8:0.000} |             |           |");
        return 0;
    }

    /// <param name="FlushMs">Part of <paramref name="UnpackMs"/> spent flushing the unpacked layer to disk before it is
    /// published (the durable cache's syncfs); skopeo and umoci do not flush, so their writeback is not timed.</param>
    internal sealed record Sample(double TotalMs, double FetchMs, double UnpackMs, double FlushMs = 0);

    /// <summary>One cold pull into a fresh store under <paramref name="work"/> (removed after).</summary>
    internal static async Task<Sample> ColdAsync(string reference, string work, int? maxParallelUnpacks = null)
    {
        var root = Path.Combine(work, "br-" + Guid.NewGuid().ToString("N")[..8]);
        await SyncAsync();
        var log = new TimingLogger();
        var options = new ImageStoreOptions { Root = root, RegistryPolicy = LocalRegistries, MaxParallelUnpacks = maxParallelUnpacks ?? 4 };
        using (var store = new ImageStore(options, log))
        {
            var sw = Stopwatch.StartNew();
            await store.PullAsync(ImageReference.Parse(reference), PullPolicy.IfNotPresent, null, CancellationToken.None);
            var total = sw.Elapsed.TotalMilliseconds;
            Directory.Delete(root, recursive: true);
            return log.Sample(total);
        }
    }

    private static async Task<Sample> BatchRunnerAsync(string reference, string work, List<double> warm, List<double> restarted)
    {
        var root = Path.Combine(work, "br-" + Guid.NewGuid().ToString("N")[..8]);
        await SyncAsync();
        var log = new TimingLogger();
        var image = ImageReference.Parse(reference);
        using (var store = new ImageStore(new ImageStoreOptions { Root = root, RegistryPolicy = LocalRegistries }, log))
        {
            var sw = Stopwatch.StartNew();
            await store.PullAsync(image, PullPolicy.IfNotPresent, null, CancellationToken.None);
            var total = sw.Elapsed.TotalMilliseconds;

            sw.Restart();
            await store.PullAsync(image, PullPolicy.IfNotPresent, null, CancellationToken.None);
            warm.Add(sw.Elapsed.TotalMilliseconds);
            using (var again = new ImageStore(new ImageStoreOptions { Root = root, RegistryPolicy = LocalRegistries }))
            {
                sw.Restart();
                await again.PullAsync(image, PullPolicy.IfNotPresent, null, CancellationToken.None);
                restarted.Add(sw.Elapsed.TotalMilliseconds);
            }
            Directory.Delete(root, recursive: true);
            return log.Sample(total);
        }
    }

    internal static async Task<Sample> SkopeoUmociAsync(string reference, string work)
    {
        var dir = Path.Combine(work, "sk-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        await SyncAsync();
        var sw = Stopwatch.StartNew();
        await ExternalCommand.RunAsync("skopeo", ["--insecure-policy", "copy", "--quiet", "--src-tls-verify=false", $"docker://{reference}", $"oci:{dir}/oci:1"],
            timeout: TimeSpan.FromMinutes(5));
        var fetch = sw.Elapsed.TotalMilliseconds;
        sw.Restart();
        await ExternalCommand.RunAsync("umoci", ["raw", "unpack", "--image", $"{dir}/oci:1", $"{dir}/rootfs"], timeout: TimeSpan.FromMinutes(5));
        var unpack = sw.Elapsed.TotalMilliseconds;
        Directory.Delete(dir, recursive: true);
        return new Sample(fetch + unpack, fetch, unpack);
    }

    internal static Task SyncAsync() => ExternalCommand.RunAsync("sync", []);

    internal static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }

    /// <summary>
    /// Collects the timings of ImageStore's log events: download (4202), unpack of a stored blob (4203), and a layer
    /// downloaded and unpacked in one pass (4208: its download part counts as download, the rest as unpack).
    /// </summary>
    private sealed class TimingLogger : ILogger<ImageStore>
    {
        public Sample Sample(double totalMs) => new(totalMs,
            Sum(4202) + Sum(4208, "DownloadMs"),
            Sum(4203) + Sum(4208) - Sum(4208, "DownloadMs"),
            Sum(4203, "FlushMs") + Sum(4208, "FlushMs"));

        private readonly ConcurrentBag<(int EventId, string Field, long Ms)> _events = [];

        public double Sum(int eventId, string field = "ElapsedMs") =>
            _events.Where(e => e.EventId == eventId && e.Field == field).Sum(e => (double)e.Ms);

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (state is not IEnumerable<KeyValuePair<string, object?>> fields) return;
            foreach (var (key, value) in fields)
                if (key is "ElapsedMs" or "FlushMs" or "DownloadMs" && value is long ms) _events.Add((eventId.Id, key, ms));
        }

        public bool IsEnabled(LogLevel logLevel) => true;
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
    }
}
