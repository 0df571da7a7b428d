using System.Diagnostics;
using BatchRunner.Runtime.Disk;
using BatchRunner.Testing;

namespace BatchRunner.Bench;

/// <summary>
/// What the per-job disk limit costs: making and removing a job's volume (sparse image, mkfs.ext4, loop device,
/// mount; unmount, delete) against a plain directory; `dd` of 1 GiB (page cache only, and with conv=fsync) into a
/// volume against the same into a directory of the data filesystem; and moving outputs off a volume
/// (<see cref="OutputsTransfer"/>) for one 1 GiB file and for 10,000 files of 4 KiB, against `cp -a`.
/// Alternates which side goes first each round.
/// </summary>
public static class DiskBench
{
    private const string Root = "/var/tmp/batchrunner-bench/disk";
    private const long GiB = 1L << 30;

    public static async Task<int> RunAsync(int rounds)
    {
        if (Directory.Exists(Root)) Directory.Delete(Root, recursive: true);
        Directory.CreateDirectory(Root);
        var volumes = new LoopDiskVolumes();
        Console.WriteLine($"{rounds} rounds; data filesystem: {Root}");

        // 1. Per-job cost of the limit: a 10 GiB volume made and removed, against mkdir + rmdir.
        var create = new List<double>();
        var remove = new List<double>();
        var plain = new List<double>();
        for (var i = 0; i < rounds * 4; i++)
        {
            var dir = Directory.CreateDirectory(Path.Combine(Root, $"v{i}")).FullName;
            var sw = Stopwatch.StartNew();
            var v = await volumes.CreateAsync(dir, 10 * GiB, CancellationToken.None);
            create.Add(sw.Elapsed.TotalMilliseconds);
            sw.Restart();
            await v.DisposeAsync();
            remove.Add(sw.Elapsed.TotalMilliseconds);
            sw.Restart();
            Directory.CreateDirectory(Path.Combine(dir, "plain"));
            Directory.Delete(Path.Combine(dir, "plain"));
            plain.Add(sw.Elapsed.TotalMilliseconds);
            Directory.Delete(dir);
        }
        Row("volume create (10 GiB limit)", create);
        Row("volume remove", remove);
        Row("baseline: mkdir + rmdir", plain);

        // 2. A write-heavy job: dd 1 GiB, buffered and with fsync, volume vs plain directory.
        foreach (var fsync in new[] { false, true })
        {
            var inVolume = new List<double>();
            var inDir = new List<double>();
            for (var i = 0; i < rounds; i++)
            {
                async Task Volume()
                {
                    var dir = Directory.CreateDirectory(Path.Combine(Root, $"dd-v{i}")).FullName;
                    await using var v = await volumes.CreateAsync(dir, 2 * GiB, CancellationToken.None);
                    inVolume.Add(await DdAsync(Path.Combine(v.Path, "f"), fsync));
                    await v.DisposeAsync();
                    Directory.Delete(dir);
                }
                async Task Dir()
                {
                    var dir = Directory.CreateDirectory(Path.Combine(Root, $"dd-d{i}")).FullName;
                    inDir.Add(await DdAsync(Path.Combine(dir, "f"), fsync));
                    Directory.Delete(dir, recursive: true);
                }
                if (i % 2 == 0) { await Volume(); await Dir(); } else { await Dir(); await Volume(); }
            }
            var what = fsync ? "dd 1 GiB conv=fsync" : "dd 1 GiB (page cache)";
            Row($"{what}, job disk", inVolume, "ms", GiB);
            Row($"{what}, data dir", inDir, "ms", GiB);
            Console.WriteLine($"  ratio of medians: {Median(inVolume) / Median(inDir):0.00}");
        }

        // 3. Moving outputs off the volume when the job ends, against cp -a of the same tree to the same place.
        foreach (var (label, fill) in new (string, Func<string, Task>)[]
                 {
                     ("one 1 GiB file", d => DdAsync(Path.Combine(d, "f"), fsync: true)),
                     ("10,000 files of 4 KiB", d => ManyFilesAsync(d, 10_000, 4096)),
                 })
        {
            var move = new List<double>();
            var cp = new List<double>();
            for (var i = 0; i < rounds; i++)
            {
                var dir = Directory.CreateDirectory(Path.Combine(Root, $"mv{i}")).FullName;
                await using var v = await volumes.CreateAsync(dir, 2 * GiB, CancellationToken.None);
                var outputs = Directory.CreateDirectory(Path.Combine(v.Path, "outputs")).FullName;
                await fill(outputs);
                await ExternalCommand.RunAsync("sync", []);
                var sw = Stopwatch.StartNew();
                await ExternalCommand.RunAsync("cp", ["-a", outputs, Path.Combine(dir, "copied")]);
                await ExternalCommand.RunAsync("sync", ["-f", dir]);
                cp.Add(sw.Elapsed.TotalMilliseconds);
                Directory.Delete(Path.Combine(dir, "copied"), recursive: true);
                await ExternalCommand.RunAsync("sync", []);
                sw.Restart();
                OutputsTransfer.Move(outputs, Path.Combine(dir, "moved"), v.ReleaseFreedSpace);
                await ExternalCommand.RunAsync("sync", ["-f", dir]);
                move.Add(sw.Elapsed.TotalMilliseconds);
                await v.DisposeAsync();
                Directory.Delete(dir, recursive: true);
            }
            Row($"outputs move, {label}", move);
            Row($"baseline: cp -a, {label}", cp);
        }
        Directory.Delete(Root, recursive: true);
        return 0;
    }

    private static async Task<double> DdAsync(string file, bool fsync)
    {
        var sw = Stopwatch.StartNew();
        await ExternalCommand.RunAsync("dd", ["if=/dev/zero", $"of={file}", "bs=1M", "count=1024", .. fsync ? new[] { "conv=fsync" } : []]);
        return sw.Elapsed.TotalMilliseconds;
    }

    private static async Task ManyFilesAsync(string dir, int count, int size)
    {
        var data = new byte[size];
        for (var i = 0; i < count; i++)
        {
            var sub = Directory.CreateDirectory(Path.Combine(dir, (i / 1000).ToString("D2"))).FullName;
            await File.WriteAllBytesAsync(Path.Combine(sub, $"{i}.bin"), data);
        }
    }

    private static double Median(List<double> xs) => xs.Order().ElementAt(xs.Count / 2);

    private static void Row(string what, List<double> ms, string unit = "ms", long bytes = 0)
    {
        double P(double q) { var s = ms.Order().ToList(); return s[(int)Math.Round(q * (s.Count - 1))]; }
        var rate = bytes > 0 ? $"  ({bytes / (P(.5) / 1000) / (1 << 20):0} MiB/s)" : "";
        Console.WriteLine($"{what,-42} median {P(.5),8:0.0}  p10 {P(.1),8:0.0}  p90 {P(.9),8:0.0}  {unit}{rate}");
    }
}
