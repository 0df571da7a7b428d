// GPU check on a real NVIDIA machine: discovery → container with one GPU (nvidia-smi + a CUDA matmul via
// PyTorch) with NVML sampling → container without GPUs → a device-name experiment. Each step prints
// "STEP <name>: OK|FAILED: <error>" and the whole result goes to $OUT/probe-result.json.
using System.Diagnostics;
using System.Text.Json;
using BatchRunner.Oci;
using BatchRunner.Oci.Snapshots;
using BatchRunner.Runtime;
using BatchRunner.Runtime.Gpus;
using BatchRunner.Runtime.Spec;

var opt = Args.Parse(args);
Directory.CreateDirectory(opt.Out);
var results = new Dictionary<string, object?>();
var json = new JsonSerializerOptions { WriteIndented = true };
var failed = false;

async Task<T?> Step<T>(string name, Func<Task<T>> body)
{
    var sw = Stopwatch.StartNew();
    try
    {
        var r = await body();
        Console.WriteLine($"STEP {name}: OK ({sw.Elapsed.TotalSeconds:0.0} s)");
        results[name] = new { ok = true, seconds = sw.Elapsed.TotalSeconds, result = r };
        return r;
    }
    catch (Exception e)
    {
        failed = true;
        Console.WriteLine($"STEP {name}: FAILED ({sw.Elapsed.TotalSeconds:0.0} s): {e.GetType().Name}: {e.Message}");
        results[name] = new { ok = false, seconds = sw.Elapsed.TotalSeconds, error = e.ToString() };
        return default;
    }
}

void Save() => File.WriteAllText(Path.Combine(opt.Out, "probe-result.json"), JsonSerializer.Serialize(results, json));

// 1. Inventory.
var inventory = await Step("inventory", async () =>
{
    var inv = await GpuInventory.DiscoverAsync(new GpuDiscoveryOptions());
    Console.WriteLine(JsonSerializer.Serialize(inv, json));
    return inv.Gpus.Count > 0 ? inv : throw new InvalidOperationException($"no GPU found ({string.Join("; ", inv.Warnings)})");
});
Save();

// 2. Metrics sources outside any container.
NvmlMetricsSource? nvml = null;
await Step("metrics-nvml", async () =>
{
    nvml = NvmlMetricsSource.TryCreate(out var error) ?? throw new InvalidOperationException(error);
    var s = await nvml.SampleAsync(null, CancellationToken.None);
    Console.WriteLine(JsonSerializer.Serialize(s, json));
    return s;
});
await Step("metrics-nvidia-smi", async () =>
{
    var s = await new NvidiaSmiMetricsSource().SampleAsync(null, CancellationToken.None);
    Console.WriteLine(JsonSerializer.Serialize(s, json));
    return s;
});
Save();
if (inventory is null) { Save(); return 1; }

// 3. Root filesystem: the host's root as the lower layer of an overlay (upper on a tmpfs, since an overlay
//    upper cannot live on overlayfs); fallback: a read-only bind of "/".
var work = "/tmp/batchrunner-gpu-check";
var rootfsInfo = await Step("rootfs", async () =>
{
    Directory.CreateDirectory(work);
    await Sh($"mountpoint -q {work} || mount -t tmpfs -o size=2g tmpfs {work}");
    try
    {
        var m = await new OverlaySnapshotter().MountAsync(["/"], Path.Combine(work, "overlay"), CancellationToken.None);
        return new RootfsInfo(m.RootfsPath, "overlay(lowerdir=/, upper on tmpfs)", m, false);
    }
    catch (Exception e)
    {
        Console.WriteLine($"overlay of / failed ({e.Message}); falling back to a read-only bind of /");
        var dir = Path.Combine(work, "bind-rootfs");
        Directory.CreateDirectory(dir);
        await Sh($"mount --bind / {dir} && mount -o remount,bind,ro {dir}");
        return new RootfsInfo(dir, $"read-only bind of / (overlay failed: {e.Message})", null, true);
    }
});
Save();
if (rootfsInfo is null) return 1;
Console.WriteLine($"rootfs: {rootfsInfo.Path} ({rootfsInfo.Kind})");

var mounts = new List<BindMount>();
if (Directory.Exists("/opt/torch")) mounts.Add(new BindMount("/opt/torch", "/opt/torch", ReadOnly: true));
var env = new List<string> { "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/tmp" };
if (!string.IsNullOrEmpty(opt.PythonPath)) env.Add($"PYTHONPATH={opt.PythonPath}");
var torchScript = "import time, torch; print('torch', torch.__version__, 'cuda', torch.version.cuda); print('available', torch.cuda.is_available(), 'count', torch.cuda.device_count());" +
                  " print('device0', torch.cuda.get_device_name(0)); x=torch.randn(4096,4096,device='cuda'); print('sum', (x@x).sum().item());" +
                  " t=time.time(); n=0\nwhile time.time()-t<6:\n  y=x@x; n+=1\ntorch.cuda.synchronize(); print('matmuls', n, 'in 6 s')";

async Task<ContainerRun> RunContainer(string name, IReadOnlyList<Gpu> gpus, string script, bool sample, TimeSpan limit, string? binary = null)
{
    var runtime = new RuncRuntime(new RuncRuntimeOptions
    {
        BinaryPath = binary ?? opt.Runc,
        Name = Path.GetFileName(binary ?? opt.Runc),
        StateRoot = $"/run/batchrunner-gpu-check/{Path.GetFileName(binary ?? opt.Runc)}",
        ExtraSpecOptions = [GpuSpecOpts.WithGpus(gpus, inventory!.Common)],
    });
    var id = $"br-gpucheck-{name}";
    await runtime.CleanupOrphansAsync(id, CancellationToken.None);
    var spec = new ContainerSpec
    {
        Id = id, RootfsPath = rootfsInfo!.Path, Args = ["/bin/sh", "-c", script], Env = env,
        ReadonlyRootfs = rootfsInfo.ReadOnly, Mounts = mounts,
    };
    var bundle = Path.Combine(work, "bundles", id);
    var io = new ContainerIo(Path.Combine(opt.Out, $"{name}.stdout"), Path.Combine(opt.Out, $"{name}.stderr"));
    var sw = Stopwatch.StartNew();
    await using var c = await runtime.StartAsync(spec, bundle, io, CancellationToken.None);
    File.Copy(Path.Combine(bundle, "config.json"), Path.Combine(opt.Out, $"{name}.config.json"), overwrite: true);
    var samples = new List<GpuSample>();
    GpuUsageSampler? sampler = sample && nvml is not null && gpus.Count > 0
        ? GpuUsageSampler.Start(nvml, gpus.Select(g => g.Uuid).ToList(), TimeSpan.FromMilliseconds(500), s => { lock (samples) samples.AddRange(s); })
        : null;
    using var cts = new CancellationTokenSource(limit);
    BatchRunner.Core.ExitResult exit;
    try { exit = await c.WaitAsync(cts.Token); }
    catch (OperationCanceledException) { await c.KillAsync(CancellationToken.None); exit = await c.WaitAsync(CancellationToken.None); }
    var usage = sampler is null ? null : await sampler.StopAsync();
    var stdout = await File.ReadAllTextAsync(io.StdoutPath);
    var stderr = await File.ReadAllTextAsync(io.StderrPath);
    Console.WriteLine($"--- {name}: exit {exit.ExitCode} after {sw.Elapsed.TotalSeconds:0.0} s\n--- stdout\n{stdout}--- stderr\n{stderr}");
    if (usage is not null) Console.WriteLine($"--- GPU usage during {name}: {JsonSerializer.Serialize(usage)}\n--- samples: {samples.Count}, max util {samples.Max(s => s.UtilizationPercent)}, max mem {samples.Max(s => s.MemoryUsedBytes)}, max power {samples.Max(s => s.PowerWatts)} W, max temp {samples.Max(s => s.TemperatureCelsius)} C");
    return new ContainerRun(exit.ExitCode, exit.Signal, sw.Elapsed.TotalSeconds, stdout, stderr, usage, samples);
}

var py = opt.Python;
var gpuScript = $$"""
    echo "== /dev (nvidia)"; ls -l /dev | grep -i nvidia
    echo "== env"; env | grep -E 'VISIBLE_DEVICES' | sort
    echo "== ld.so.cache has libcuda"; (ldconfig -p 2>/dev/null || /sbin/ldconfig -p) | grep -E 'libcuda.so.1|libnvidia-ml.so.1'
    echo "== nvidia-smi -L"; nvidia-smi -L; echo "nvidia-smi exit $?"
    echo "== torch"; {{py}} -c "{{torchScript.Replace("\"", "\\\"")}}"; echo "python exit $?"
    """;
await Step("container-gpus-1", async () =>
{
    var r = await RunContainer("gpus1", [inventory.Gpus[0]], gpuScript, sample: true, TimeSpan.FromSeconds(240));
    var missing = new[] { "nvidia-smi exit 0", "available True", "matmuls" }.Where(x => !r.Stdout.Contains(x)).ToList();
    return missing.Count == 0 ? r : throw new InvalidOperationException($"container output lacks {string.Join(", ", missing.Select(m => $"\"{m}\""))} (see gpus1.stdout/.stderr)");
});
Save();

await Step("container-gpus-0", () => RunContainer("gpus0", [],
    "echo '== /dev'; ls /dev; ls /dev/nvidia* 2>&1; echo '== nvidia-smi'; nvidia-smi -L 2>&1; echo \"nvidia-smi exit $?\"; " +
    "echo '== mknod 195:0'; mknod /tmp/gpu c 195 0 2>&1; echo \"mknod exit $?\"; head -c1 /tmp/gpu >/dev/null 2>&1; echo \"open exit $?\"",
    sample: false, TimeSpan.FromSeconds(60)).ContinueWith(t =>
    {
        var r = t.Result;
        return r.Stdout.Contains("nvidia-smi exit 0") || r.Stdout.Contains("open exit 0") || !r.Stdout.Contains("No such file")
            ? throw new InvalidOperationException("a container without GPUs reached a GPU (see gpus0.stdout)") : r;
    }));
Save();

// 5. Experiment: a GPU node whose name differs from its minor number (what renumbering would do to any GPU
//    but the first). Answers whether the driver's user-space finds a renamed node.
await Step("experiment-renamed-node", () =>
{
    var g = inventory.Gpus[^1];
    var renamedPath = inventory.Gpus.Count > 1 ? "/dev/nvidia0" : "/dev/nvidia1";
    var renamed = g with { Edits = g.Edits with { DeviceNodes = g.Edits.DeviceNodes.Select(n => n with { Path = renamedPath, HostPath = n.EffectiveHostPath }).ToList() } };
    return RunContainer("renamed", [renamed],
        $"ls -l /dev | grep nvidia; nvidia-smi -L; echo \"nvidia-smi exit $?\"; {py} -c \"import torch; print('available', torch.cuda.is_available()); print(torch.cuda.get_device_name(0))\"; echo \"python exit $?\"",
        sample: false, TimeSpan.FromSeconds(120)).ContinueWith(t =>
        {
            var r = t.Result;
            Console.WriteLine($"EXPERIMENT node {renamedPath} for minor {g.Edits.DeviceNodes[0].EffectiveHostPath}: nvidia-smi works={r.Stdout.Contains("nvidia-smi exit 0")}, torch works={r.Stdout.Contains("available True")}");
            return r;
        });
});
Save();

// 6. cgroup limits and usage on this host's cgroup version (the GPU machine is pure cgroup v2, which
//    the project's own machines are not): an OOM of a shell's child while the shell exits 0, and CPU
//    seconds under a 0.5-CPU quota, read back through the same readers the server uses.
async Task<object> CgroupLimits(string binary, string prefix)
{
    var runtime = new RuncRuntime(new RuncRuntimeOptions { BinaryPath = binary, StateRoot = $"/run/batchrunner-gpu-check/{Path.GetFileName(binary)}" });
    Console.WriteLine($"{binary}: cgroup version detected: {runtime.CgroupVersion}");
    async Task<(BatchRunner.Core.ExitResult Exit, BatchRunner.Core.ResourceUsage Usage, double Seconds)> Run(string name, string script, double? cpus, long? memory)
    {
        var id = $"br-gpucheck-{prefix}{name}";
        await runtime.CleanupOrphansAsync(id, CancellationToken.None);
        var spec = new ContainerSpec
        {
            Id = id, RootfsPath = rootfsInfo!.Path, Args = ["/bin/sh", "-c", script], Env = env,
            ReadonlyRootfs = rootfsInfo.ReadOnly, Cpus = cpus, MemoryLimitBytes = memory, PidsLimit = 256,
        };
        var io = new ContainerIo(Path.Combine(opt.Out, $"{prefix}{name}.stdout"), Path.Combine(opt.Out, $"{prefix}{name}.stderr"));
        var sw = Stopwatch.StartNew();
        await using var c = await runtime.StartAsync(spec, Path.Combine(work, "bundles", id), io, CancellationToken.None);
        var exit = await c.WaitAsync(CancellationToken.None);
        var usage = c.ReadUsage();
        Console.WriteLine($"--- {prefix}{name}: {JsonSerializer.Serialize(exit)} {JsonSerializer.Serialize(usage)} in {sw.Elapsed.TotalSeconds:0.00} s");
        return (exit, usage, sw.Elapsed.TotalSeconds);
    }
    var oom = await Run("oom", $"{py} -c 'a = bytearray(400 << 20); print(len(a))'; exit 0", null, 64L << 20);
    if (!oom.Exit.OomKilled || oom.Exit.ExitCode != 0) throw new InvalidOperationException($"the hog was not reported OOM-killed with the shell's exit 0: {JsonSerializer.Serialize(oom.Exit)}");
    var cpu = await Run("cpu", $"{py} -c 'import time, threading\ndef spin():\n  t = time.time()\n  while time.time() - t < 3: pass\nts = [threading.Thread(target=spin) for _ in range(2)]\n[x.start() for x in ts]\n[x.join() for x in ts]'", 0.5, 256L << 20);
    var perSecond = (cpu.Usage.CpuSeconds ?? 0) / cpu.Seconds;
    Console.WriteLine($"CPU: {cpu.Usage.CpuSeconds:0.00} CPU-seconds over {cpu.Seconds:0.00} s = {perSecond:0.00} CPU per second under a 0.5 quota; throttled periods {cpu.Usage.CpuThrottledPeriods}");
    if (perSecond is < 0.35 or > 0.65) throw new InvalidOperationException($"CPU per second {perSecond:0.00} is not near 0.5");
    // A fork loop past the pids limit (256): the job's processes stay under it; the exit status is the init's.
    var pids = await Run("pids", "i=0; while [ $i -lt 300 ]; do sleep 30 & i=$((i+1)); done 2>/dev/null; echo alive=$(ls /proc | grep -cE '^[0-9]+$'); exit 3", null, null);
    var alive = File.ReadAllText(Path.Combine(opt.Out, $"{prefix}pids.stdout"));
    Console.WriteLine($"pids: exit {pids.Exit.ExitCode}, {alive.Trim()}");
    if (System.Text.RegularExpressions.Regex.Match(alive, @"alive=(\d+)") is { Success: true } m && int.Parse(m.Groups[1].Value) > 256)
        throw new InvalidOperationException($"more processes than the pids limit: {alive.Trim()}");
    return new { oom = oom.Usage, cpu = cpu.Usage, cpuPerSecond = perSecond, pids = pids.Usage };
}
await Step("cgroup-limits", () => CgroupLimits(opt.Runc, ""));
Save();

// 7. crun (only given --crun): crun is what "auto" picks on a pure v2 host; this host is one, the
//    project's machines (hybrid cgroups, where crun refuses to run) are not. Detection, limits and usage,
//    hardening, a GPU, and start latency against runc and against bare `run`.
if (opt.Crun is { } crunPath)
{
    await Step("crun-detect", async () =>
    {
        var sel = await new RuntimeDetector(BatchRunner.Runtime.Cgroups.CgroupVersionDetector.Detect(),
            n => n == "crun" ? crunPath : n == "runc" ? opt.Runc : null).DetectAsync("auto", CancellationToken.None);
        Console.WriteLine($"auto: {sel.Name} {sel.Version} at {sel.Path}: {sel.Reason}");
        return sel.Name == "crun" ? sel : throw new InvalidOperationException($"auto chose {sel.Name}: {sel.Reason}");
    });
    Save();
    await Step("crun-cgroup-limits", () => CgroupLimits(crunPath, "crun-"));
    Save();
    await Step("crun-hardening", () => RunContainer("crun-hardening", [],
        "grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; echo \"pid1=$(cat /proc/1/comm)\"; " +
        "mount -t tmpfs x /mnt 2>&1; echo \"mount exit $?\"; unshare -U true 2>&1; echo \"unshare exit $?\"; ls /proc | grep -cE '^[0-9]+$'",
        sample: false, TimeSpan.FromSeconds(60), crunPath).ContinueWith(t =>
        {
            var r = t.Result;
            var missing = new[] { "CapEff:\t0000000000000000", "NoNewPrivs:\t1", "Seccomp:\t2", "pid1=sh" }.Where(w => !r.Stdout.Contains(w)).ToList();
            var forbidden = new[] { "mount exit 0", "unshare exit 0" }.Where(r.Stdout.Contains).ToList();
            return missing.Count + forbidden.Count == 0 ? r
                : throw new InvalidOperationException($"crun container output lacks [{string.Join(", ", missing)}] or has [{string.Join(", ", forbidden)}]");
        }));
    Save();
    await Step("crun-gpus-1", async () =>
    {
        var r = await RunContainer("crun-gpus1", [inventory.Gpus[0]],
            $"ls /dev | grep nvidia; nvidia-smi -L; echo \"nvidia-smi exit $?\"; {py} -c \"import torch; print('available', torch.cuda.is_available(), torch.cuda.get_device_name(0))\"",
            sample: false, TimeSpan.FromSeconds(120), crunPath);
        var missing = new[] { "nvidia-smi exit 0", "available True" }.Where(x => !r.Stdout.Contains(x)).ToList();
        return missing.Count == 0 ? r : throw new InvalidOperationException($"crun GPU container output lacks {string.Join(", ", missing)}");
    });
    Save();
    await Step("start-latency", async () =>
    {
        // /bin/true, 20 rounds each, alternating: our driver (run --detach .. waitpid .. delete) and a bare
        // `X run` of the same config.json, for runc and crun.
        var result = new Dictionary<string, double>();
        foreach (var bin in new[] { opt.Runc, crunPath })
        {
            var n = Path.GetFileName(bin);
            var runtime = new RuncRuntime(new RuncRuntimeOptions { BinaryPath = bin, StateRoot = $"/run/batchrunner-gpu-check/lat-{n}" });
            ContainerSpec Spec(string id) => new() { Id = id, RootfsPath = rootfsInfo!.Path, Args = ["/bin/true"], ReadonlyRootfs = rootfsInfo.ReadOnly, Cpus = 1, MemoryLimitBytes = 256 << 20, PidsLimit = 64 };
            var ours = new List<double>(); var bare = new List<double>();
            for (var i = -1; i < 20; i++)
            {
                var id = $"br-gpucheck-lat-{n}-{i + 1}";
                var sw = Stopwatch.StartNew();
                await using (var c = await runtime.StartAsync(Spec(id), Path.Combine(work, "bundles", id), new ContainerIo("/dev/null", "/dev/null"), CancellationToken.None))
                    await c.WaitAsync(CancellationToken.None);
                if (i >= 0) ours.Add(sw.Elapsed.TotalMilliseconds);
                var bundle = Path.Combine(work, "bare", id);
                Directory.CreateDirectory(bundle);
                await File.WriteAllTextAsync(Path.Combine(bundle, "config.json"), SpecBuilder.ForContainer(Spec(id + "b")).ToJson());
                sw.Restart();
                var p = Process.Start(new ProcessStartInfo(bin, ["--root", $"/run/batchrunner-gpu-check/bare-{n}", "run", "--bundle", bundle, id + "b"]) { RedirectStandardInput = true })!;
                p.StandardInput.Close();
                await p.WaitForExitAsync();
                if (i >= 0) bare.Add(sw.Elapsed.TotalMilliseconds);
                if (p.ExitCode != 0) throw new InvalidOperationException($"bare {n} run exited {p.ExitCode}");
            }
            double Median(List<double> xs) => xs.Order().ElementAt(xs.Count / 2);
            result[$"{n}-ours-ms"] = Median(ours);
            result[$"{n}-bare-ms"] = Median(bare);
            Console.WriteLine($"START {n}: ours {Median(ours):0.0} ms, bare run {Median(bare):0.0} ms, ratio {Median(ours) / Median(bare):0.00}");
        }
        return result;
    });
    Save();
}

nvml?.Dispose();
if (rootfsInfo.Overlay is not null) await rootfsInfo.Overlay.DisposeAsync();
else await Sh($"umount {rootfsInfo.Path}");
await Sh($"umount {work} || true");
Save();
Console.WriteLine(failed ? "GPU CHECK: some steps FAILED (see above)" : "GPU CHECK: all steps OK");
return failed ? 1 : 0;

static async Task Sh(string command)
{
    var p = Process.Start(new ProcessStartInfo("/bin/sh", ["-c", command]) { RedirectStandardError = true })!;
    var err = await p.StandardError.ReadToEndAsync();
    await p.WaitForExitAsync();
    if (p.ExitCode != 0) throw new InvalidOperationException($"`{command}` failed (exit {p.ExitCode}): {err.Trim()}");
}

sealed record ContainerRun(int ExitCode, int? Signal, double Seconds, string Stdout, string Stderr, GpuUsage? Usage, List<GpuSample> Samples);

sealed record RootfsInfo(string Path, string Kind, RootfsMount? Overlay, bool ReadOnly);

sealed record Args(string Runc, string Out, string Python, string? PythonPath, string? Crun)
{
    public static Args Parse(string[] a)
    {
        string? Get(string name) => Array.IndexOf(a, name) is var i and >= 0 && i + 1 < a.Length ? a[i + 1] : null;
        return new Args(Path.GetFullPath(Get("--runc") ?? "/usr/sbin/runc"), Get("--out") ?? Environment.GetEnvironmentVariable("OUT") ?? "out",
            Get("--python") ?? "python3", Get("--pythonpath"), Get("--crun") is { } c ? Path.GetFullPath(c) : null);
    }
}
