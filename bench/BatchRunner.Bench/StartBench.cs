using System.Diagnostics;
using BatchRunner.Runtime;
using BatchRunner.Runtime.Spec;
using BatchRunner.Testing;

namespace BatchRunner.Bench;

/// <summary>
/// Container start-to-finish cost of the runtime driver (<see cref="RuncRuntime"/>: write config, create,
/// start, wait for the exit, read the cgroup, delete) against a bare `RUNTIME run` of the very same
/// config.json, for `/bin/true` in a busybox rootfs; for runc also the driver starting runc from its file rather than
/// from its sealed copy (<see cref="RuncRuntimeOptions.RunFromSealedCopy"/>), and with the Go runtime's default
/// GOMAXPROCS (<see cref="RuncRuntimeOptions.GoMaxProcs"/>). Each round runs every contender once, the
/// order turning round by round; the CPU is that of the children reaped (runc and the container), from /proc/self/stat.
/// </summary>
public static class StartBench
{
    private const string Root = "/var/tmp/batchrunner-bench/start";

    public static async Task<int> RunAsync(int rounds, string runtimePath)
    {
        if (Directory.Exists(Root)) Directory.Delete(Root, recursive: true);
        var rootfs = BusyboxRootfs.Create(Path.Combine(Root, "rootfs"));
        var (name, version) = await RuntimeDetector.VersionAsync(runtimePath, CancellationToken.None);
        var options = new RuncRuntimeOptions { BinaryPath = runtimePath, Name = name, Version = version, StateRoot = Path.Combine(Root, "state") };
        var runtime = new RuncRuntime(options);
        var fromFile = new RuncRuntime(options with { RunFromSealedCopy = false });
        var goDefault = new RuncRuntime(options with { GoMaxProcs = null });
        Console.WriteLine($"{name} {version}, cgroup {runtime.CgroupVersion}, {rounds} rounds of /bin/true");

        ContainerSpec Spec(string id) => new()
        {
            Id = id, RootfsPath = rootfs, Args = ["/bin/true"], ReadonlyRootfs = true,
            Cpus = 1, MemoryLimitBytes = 256 << 20, PidsLimit = 64,
        };

        async Task<double> Ours(RuncRuntime runtime, string id)
        {
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
        async Task<double> Bare(string id)
        {
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

        List<(string Name, Func<string, Task<double>> Run)> contenders = [("BatchRunner start..delete", id => Ours(runtime, id))];
        if (name == "runc")
        {
            contenders.Add(("  runc from its file", id => Ours(fromFile, id)));
            contenders.Add(("  runc, GOMAXPROCS per CPU", id => Ours(goDefault, id)));
        }
        contenders.Add(($"bare `{name} run`", Bare));
        for (var c = 0; c < contenders.Count; c++) await contenders[c].Run($"br-bench-warm-{c}"); // JIT, page cache, the sealed copy
        var wall = contenders.Select(_ => new List<double>()).ToArray();
        var cpu = new double[contenders.Count];
        for (var i = 0; i < rounds; i++)
            for (var k = 0; k < contenders.Count; k++)
            {
                var c = (i + k) % contenders.Count;
                var before = ProcStat.SelfAndReapedMs(Environment.ProcessId)!.Value.ReapedChildrenMs;
                wall[c].Add(await contenders[c].Run($"br-bench-{c}-{i}"));
                cpu[c] += ProcStat.SelfAndReapedMs(Environment.ProcessId)!.Value.ReapedChildrenMs - before;
            }
        double P(List<double> xs, double q) { var s = xs.Order().ToList(); return s[(int)Math.Round(q * (s.Count - 1))]; }
        Console.WriteLine($"{"",-28} {"median",8} {"p10",8} {"p90",8}  {"children's CPU, mean",20}");
        for (var c = 0; c < contenders.Count; c++)
            Console.WriteLine($"{contenders[c].Name,-28} {P(wall[c], .5),8:0.0} {P(wall[c], .1),8:0.0} {P(wall[c], .9),8:0.0}  {cpu[c] / rounds,17:0.0} ms");
        Console.WriteLine($"ratio of medians: {P(wall[0], .5) / P(wall[^1], .5):0.00}" +
            (contenders.Count == 4 ? $"; against runc from its file: wall {P(wall[0], .5) / P(wall[1], .5):0.00}, children's CPU {cpu[0] / cpu[1]:0.00}; " +
                $"against GOMAXPROCS per CPU: wall {P(wall[0], .5) / P(wall[2], .5):0.00}, children's CPU {cpu[0] / cpu[2]:0.00}" : ""));
        Directory.Delete(Root, recursive: true);
        return 0;
    }
}
