using System.Diagnostics;
using BatchRunner.Runtime;
using BatchRunner.Runtime.Spec;
using BatchRunner.Testing;

namespace BatchRunner.Bench;

/// <summary>
/// Container start-to-finish cost of the runtime driver (<see cref="RuncRuntime"/>: write config, create,
/// start, wait for the exit, read the cgroup, delete) against a bare `RUNTIME run` of the very same
/// config.json, for `/bin/true` in a busybox rootfs. Alternates which goes first each round.
/// </summary>
public static class StartBench
{
    private const string Root = "/var/tmp/batchrunner-bench/start";

    public static async Task<int> RunAsync(int rounds, string runtimePath)
    {
        if (Directory.Exists(Root)) Directory.Delete(Root, recursive: true);
        var rootfs = BusyboxRootfs.Create(Path.Combine(Root, "rootfs"));
        var (name, version) = await RuntimeDetector.VersionAsync(runtimePath, CancellationToken.None);
        var runtime = new RuncRuntime(new RuncRuntimeOptions { BinaryPath = runtimePath, Name = name, Version = version, StateRoot = Path.Combine(Root, "state") });
        Console.WriteLine($"{name} {version}, cgroup {runtime.CgroupVersion}, {rounds} rounds of /bin/true");

        ContainerSpec Spec(string id) => new()
        {
            Id = id, RootfsPath = rootfs, Args = ["/bin/true"], ReadonlyRootfs = true,
            Cpus = 1, MemoryLimitBytes = 256 << 20, PidsLimit = 64,
        };

        async Task<double> Ours(int i)
        {
            var id = $"br-bench-ours-{i}";
            var io = new ContainerIo(Path.Combine(Root, id + ".out"), Path.Combine(Root, id + ".err"));
            var sw = Stopwatch.StartNew();
            await using (var c = await runtime.StartAsync(Spec(id), Path.Combine(Root, "bundles", id), io, CancellationToken.None))
            {
                var exit = await c.WaitAsync(CancellationToken.None);
                if (exit.ExitCode != 0) throw new InvalidOperationException($"{id} exited {exit.ExitCode}");
                c.ReadUsage();
            }
            return sw.Elapsed.TotalMilliseconds;
        }

        // The same config.json (limits, seccomp, masked paths) that ours writes, prepared outside the timing.
        async Task<double> Bare(int i)
        {
            var id = $"br-bench-bare-{i}";
            var bundle = Path.Combine(Root, "bare", id);
            Directory.CreateDirectory(bundle);
            await File.WriteAllTextAsync(Path.Combine(bundle, "config.json"), SpecBuilder.ForContainer(Spec(id)).ToJson());
            var psi = new ProcessStartInfo(runtimePath) { UseShellExecute = false, RedirectStandardInput = true };
            foreach (var a in new[] { "--root", Path.Combine(Root, "bare-state"), "run", "--bundle", bundle, id }) psi.ArgumentList.Add(a);
            var sw = Stopwatch.StartNew();
            using var p = Process.Start(psi)!;
            p.StandardInput.Close();
            await p.WaitForExitAsync();
            var ms = sw.Elapsed.TotalMilliseconds;
            if (p.ExitCode != 0) throw new InvalidOperationException($"bare {id} exited {p.ExitCode}");
            return ms;
        }

        await Ours(-1); await Bare(-1); // warm-up: JIT, page cache
        var ours = new List<double>();
        var bare = new List<double>();
        for (var i = 0; i < rounds; i++)
        {
            if (i % 2 == 0) { ours.Add(await Ours(i)); bare.Add(await Bare(i)); }
            else { bare.Add(await Bare(i)); ours.Add(await Ours(i)); }
        }
        double P(List<double> xs, double q) { var s = xs.Order().ToList(); return s[(int)Math.Round(q * (s.Count - 1))]; }
        Console.WriteLine($"{"",-28} {"median",8} {"p10",8} {"p90",8}");
        Console.WriteLine($"{"BatchRunner start..delete",-28} {P(ours, .5),8:0.0} {P(ours, .1),8:0.0} {P(ours, .9),8:0.0}  ms");
        Console.WriteLine($"{$"bare `{name} run`",-28} {P(bare, .5),8:0.0} {P(bare, .1),8:0.0} {P(bare, .9),8:0.0}  ms");
        Console.WriteLine($"ratio of medians: {P(ours, .5) / P(bare, .5):0.00}");
        Directory.Delete(Root, recursive: true);
        return 0;
    }
}
