using System.Diagnostics;
using BatchRunner.Runtime;
using BatchRunner.Runtime.Logs;
using BatchRunner.Runtime.Spec;
using BatchRunner.Testing;

namespace BatchRunner.Bench;

/// <summary>
/// What the log relay costs a write-heavy job: 1 GiB through stdout (<c>yes LINE | head -c 1G</c> in busybox), run
/// by <see cref="RuncRuntime"/> (FIFOs, the relay thread, a 100 MiB cap: head, tail parts, index) against the same
/// config.json run by `runc run --keep` with stdout and stderr redirected to files, as BatchRunner did before the
/// relay (the container writes the files itself; nothing caps them). Rounds alternate which goes first. Then the
/// order the combined view gives two streams written microseconds apart (<c>echo a; echo b >&amp;2; echo c</c>).
/// </summary>
public static class LogRelayBench
{
    private const string Root = "/var/tmp/batchrunner-bench/logrelay";
    private const long Bytes = 1L << 30;
    private const long Cap = 100L << 20;

    public static async Task<int> RunAsync(int rounds, string runtimePath)
    {
        if (Directory.Exists(Root)) Directory.Delete(Root, recursive: true);
        var rootfs = BusyboxRootfs.Create(Path.Combine(Root, "rootfs"));
        var (name, version) = await RuntimeDetector.VersionAsync(runtimePath, CancellationToken.None);
        var stateRoot = Path.Combine(Root, "state");
        var runtime = new RuncRuntime(new RuncRuntimeOptions { BinaryPath = runtimePath, Name = name, Version = version, StateRoot = stateRoot });
        Console.WriteLine($"{name} {version}, cgroup {runtime.CgroupVersion}, {Environment.ProcessorCount} CPUs, {rounds} rounds of 1 GiB through stdout");

        ContainerSpec Spec(string id, string script) => new()
        {
            Id = id, RootfsPath = rootfs, Args = ["sh", "-c", script], ReadonlyRootfs = true, MemoryLimitBytes = 256 << 20, PidsLimit = 64,
        };
        var writer = $"yes 'a line of a chatty job, 64 bytes long with its newline.......' | head -c {Bytes}";

        async Task<Sample> Relay(int i)
        {
            var id = $"br-bench-relay-{i}";
            var io = new ContainerIo(Path.Combine(Root, id, "stdout.log"), Path.Combine(Root, id, "stderr.log")) { Limits = new LogLimits(Cap) };
            var cpu = Process.GetCurrentProcess().TotalProcessorTime;
            var sw = Stopwatch.StartNew();
            double jobCpu;
            await using (var c = await runtime.StartAsync(Spec(id, writer), Path.Combine(Root, "bundles", id), io, CancellationToken.None))
            {
                var exit = await c.WaitAsync(CancellationToken.None);
                if (exit.ExitCode != 0) throw new InvalidOperationException($"{id} exited {exit.ExitCode}");
                jobCpu = c.ReadUsage().CpuSeconds ?? double.NaN;
            }
            var wall = sw.Elapsed.TotalSeconds;
            var workerCpu = (Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalSeconds;
            if (StoredLog.End(io.StdoutPath) != Bytes) throw new InvalidOperationException($"{id}: {StoredLog.End(io.StdoutPath)} bytes relayed");
            var disk = StoredLog.DiskBytes(io.StdoutPath);
            Directory.Delete(Path.Combine(Root, id), recursive: true);
            return new Sample(wall, jobCpu, workerCpu, disk);
        }

        async Task<Sample> Direct(int i)
        {
            var id = $"br-bench-direct-{i}";
            var bundle = Path.Combine(Root, "direct", id);
            Directory.CreateDirectory(bundle);
            await File.WriteAllTextAsync(Path.Combine(bundle, "config.json"), SpecBuilder.ForContainer(Spec(id, writer)).ToJson());
            var psi = new ProcessStartInfo("/bin/sh") { UseShellExecute = false };
            foreach (var a in new[] { "-c", "exec \"$0\" --root \"$1\" run --keep --bundle \"$2\" \"$3\" >\"$2/stdout.log\" 2>\"$2/stderr.log\" </dev/null", runtimePath, stateRoot, bundle, id })
                psi.ArgumentList.Add(a);
            var cpu = Process.GetCurrentProcess().TotalProcessorTime;
            var sw = Stopwatch.StartNew();
            using (var p = Process.Start(psi)!)
            {
                await p.WaitForExitAsync();
                if (p.ExitCode != 0) throw new InvalidOperationException($"direct {id} exited {p.ExitCode}");
            }
            var wall = sw.Elapsed.TotalSeconds;
            var workerCpu = (Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalSeconds;
            var jobCpu = runtime.StatsReader(id).Read().CpuSeconds ?? double.NaN;
            using (var del = Process.Start(runtimePath, ["--root", stateRoot, "delete", id])) await del.WaitForExitAsync();
            var disk = new FileInfo(Path.Combine(bundle, "stdout.log")).Length;
            Directory.Delete(bundle, recursive: true);
            return new Sample(wall, jobCpu, workerCpu, disk);
        }

        await Relay(-1); await Direct(-1); // warm-up: JIT, page cache
        var relay = new List<Sample>();
        var direct = new List<Sample>();
        for (var i = 0; i < rounds; i++)
        {
            if (i % 2 == 0) { relay.Add(await Relay(i)); direct.Add(await Direct(i)); }
            else { direct.Add(await Direct(i)); relay.Add(await Relay(i)); }
        }
        static double Median(IEnumerable<double> xs) { var s = xs.Order().ToList(); return s[s.Count / 2]; }
        Console.WriteLine($"{"",-34} {"wall s",8} {"job CPU s",10} {"worker CPU s",13} {"MiB/s",7} {"on disk",10}");
        foreach (var (label, xs) in new[] { ("relay, 100 MiB cap", relay), ("direct file descriptors (before)", direct) })
        {
            var wall = Median(xs.Select(x => x.WallSeconds));
            Console.WriteLine($"{label,-34} {wall,8:0.00} {Median(xs.Select(x => x.JobCpuSeconds)),10:0.00} {Median(xs.Select(x => x.WorkerCpuSeconds)),13:0.00} {Bytes / wall / (1 << 20),7:0} {Median(xs.Select(x => (double)x.DiskBytes)) / (1 << 20),7:0} MiB");
        }
        Console.WriteLine(string.Join("  ", relay.Select((r, i) => $"round {i}: relay {r.WallSeconds:0.00} s / direct {direct[i].WallSeconds:0.00} s")));

        // Tight writes: how often the combined view shows `echo a; echo b >&2; echo c` as a, b, c.
        const int tight = 40;
        var inOrder = 0;
        for (var i = 0; i < tight; i++)
        {
            var id = $"br-bench-order-{i}";
            var io = new ContainerIo(Path.Combine(Root, id, "stdout.log"), Path.Combine(Root, id, "stderr.log"));
            await using (var c = await runtime.StartAsync(Spec(id, "echo a; echo b >&2; echo c"), Path.Combine(Root, "bundles", id), io, CancellationToken.None))
                await c.WaitAsync(CancellationToken.None);
            using var ms = new MemoryStream();
            await new OrderedLogReader([("stdout", io.StdoutPath), ("stderr", io.StderrPath)], false).PumpAsync(ms, final: true, CancellationToken.None);
            if (System.Text.Encoding.UTF8.GetString(ms.ToArray()) == "a\nb\nc\n") inOrder++;
        }
        Console.WriteLine($"echo a; echo b >&2; echo c (writes microseconds apart): a, b, c in {inOrder} of {tight} runs");
        Directory.Delete(Root, recursive: true);
        return 0;
    }

    private sealed record Sample(double WallSeconds, double JobCpuSeconds, double WorkerCpuSeconds, long DiskBytes);
}
