using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;

namespace BatchRunner.Runtime.Gpus;

/// <summary>
/// Finds NVIDIA GPUs without CDI: /dev/nvidiaN nodes, /proc/driver/nvidia/gpus/*/information (model, UUID,
/// bus, device minor), `nvidia-smi --query-gpu` (index, UUID, name, memory), and the driver's user-space
/// libraries (`ldconfig -p`) and tools. The parsers are separate so they can be tested on captured text.
/// </summary>
internal static partial class NvidiaDiscovery
{
    public const int NvidiaMajor = 195;

    /// <summary>Control nodes a CUDA program opens besides its GPUs' nodes; each is added when present.</summary>
    public static readonly IReadOnlyList<string> ControlNodes = ["nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset"];

    /// <summary>Driver libraries for compute and management (the NVIDIA container toolkit's "compute" and "utility" sets).</summary>
    public static readonly IReadOnlyList<string> DriverLibraries =
    [
        "libcuda.so", "libcudadebugger.so", "libnvidia-ml.so", "libnvidia-ptxjitcompiler.so", "libnvidia-nvvm.so",
        "libnvidia-cfg.so", "libnvidia-opencl.so", "libnvidia-gpucomp.so", "libnvidia-allocator.so",
        "libnvidia-compiler.so", "libnvidia-fatbinaryloader.so", "libnvidia-pkcs11.so", "libnvidia-pkcs11-openssl3.so",
    ];

    /// <summary>Driver tools bound into GPU containers.</summary>
    public static readonly IReadOnlyList<string> DriverBinaries =
        ["nvidia-smi", "nvidia-debugdump", "nvidia-persistenced", "nvidia-cuda-mps-control", "nvidia-cuda-mps-server"];

    public sealed record Result(IReadOnlyList<Gpu> Gpus, GpuContainerEdits Common, string Source)
    {
        public IReadOnlyDictionary<int, Gpu> ByMinor { get; init; } = new Dictionary<int, Gpu>();
    }

    public sealed record ProcGpuInfo(string? Model, string? Uuid, string? BusLocation, int? DeviceMinor);

    public sealed record SmiGpu(int Index, string Uuid, string Name, long? MemoryTotalMiB, string? PciBusId);

    [GeneratedRegex(@"^nvidia(\d+)$")]
    private static partial Regex GpuNodeName();

    public static async Task<Result> DiscoverAsync(GpuDiscoveryOptions o, List<string> warnings, CancellationToken ct)
    {
        var minors = new SortedSet<int>();
        if (Directory.Exists(o.DevDirectory))
            foreach (var f in Directory.EnumerateFileSystemEntries(o.DevDirectory, "nvidia*"))
                if (GpuNodeName().Match(Path.GetFileName(f)) is { Success: true } m) minors.Add(int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture));

        var proc = new List<ProcGpuInfo>();
        var gpusDir = Path.Combine(o.ProcDriverDirectory, "gpus");
        if (Directory.Exists(gpusDir))
            foreach (var d in Directory.EnumerateDirectories(gpusDir).Order(StringComparer.Ordinal))
            {
                var info = Path.Combine(d, "information");
                if (File.Exists(info)) proc.Add(ParseProcInformation(await File.ReadAllTextAsync(info, ct)) is var p && p.BusLocation is null ? p with { BusLocation = Path.GetFileName(d) } : p);
            }

        if (minors.Count == 0 && proc.Count == 0) return new Result([], GpuContainerEdits.Empty, "nvidia");

        var smiPath = o.NvidiaSmiPath ?? FindBinary(o.BinaryDirectories, "nvidia-smi");
        IReadOnlyList<SmiGpu> smi = [];
        if (smiPath is not null && File.Exists(smiPath))
        {
            var r = await Command.RunAsync(smiPath, ["--query-gpu=index,uuid,name,memory.total,pci.bus_id", "--format=csv,noheader,nounits"], o.CommandTimeout, ct);
            if (r.Ok) smi = ParseSmiCsv(r.Stdout);
            else warnings.Add($"{smiPath} --query-gpu failed (exit {r.ExitCode}): {r.Message}");
        }
        else warnings.Add("nvidia-smi not found: GPU memory sizes unknown");

        // One GPU per device minor; proc gives the minor, nvidia-smi the NVML index and memory (joined by UUID).
        var gpus = new List<Gpu>();
        var byMinor = new Dictionary<int, Gpu>();
        var procByMinor = proc.Where(p => p.DeviceMinor is not null).ToDictionary(p => p.DeviceMinor!.Value);
        var allMinors = new SortedSet<int>(minors.Concat(procByMinor.Keys));
        if (allMinors.Count == 0 && smi.Count > 0)
            foreach (var s in smi) allMinors.Add(s.Index); // no proc, no nodes seen: assume minor = index
        var n = 0;
        foreach (var minor in allMinors)
        {
            procByMinor.TryGetValue(minor, out var p);
            var s = p?.Uuid is { } u ? smi.FirstOrDefault(x => x.Uuid == u) : null;
            s ??= proc.Count == 0 ? smi.FirstOrDefault(x => x.Index == minor) : null;
            var node = Path.Combine(o.DevDirectory, $"nvidia{minor}");
            if (!minors.Contains(minor)) { warnings.Add($"GPU with device minor {minor} has no node {node}; skipped"); continue; }
            var gpu = new Gpu(
                Index: s?.Index ?? n,
                Uuid: p?.Uuid ?? s?.Uuid ?? $"nvidia{minor}",
                Model: p?.Model ?? s?.Name ?? "unknown",
                MemoryBytes: s?.MemoryTotalMiB is { } mib ? mib * 1024 * 1024 : 0,
                PciBusId: p?.BusLocation ?? s?.PciBusId,
                Name: null,
                Edits: new GpuContainerEdits { DeviceNodes = [new GpuDeviceNode($"/dev/nvidia{minor}", node)] });
            gpus.Add(gpu);
            byMinor[minor] = gpu;
            n++;
        }
        gpus.Sort((a, b) => a.Index.CompareTo(b.Index));

        var nodes = ControlNodes.Where(c => Exists(Path.Combine(o.DevDirectory, c)))
            .Select(c => new GpuDeviceNode($"/dev/{c}", Path.Combine(o.DevDirectory, c))).ToList();
        var mounts = new List<GpuMount>();
        if (File.Exists(o.LdconfigPath))
        {
            var r = await Command.RunAsync(o.LdconfigPath, ["-p"], o.CommandTimeout, ct);
            if (r.Ok) mounts.AddRange(LibraryMounts(ParseLdconfig(r.Stdout, LdconfigArch()), DriverLibraries));
            else warnings.Add($"{o.LdconfigPath} -p failed: {r.Message}");
        }
        else warnings.Add($"{o.LdconfigPath} not found: driver libraries not injected");
        if (!mounts.Any(m => Path.GetFileName(m.ContainerPath).StartsWith("libcuda.so", StringComparison.Ordinal)))
            warnings.Add("libcuda.so.1 not found by ldconfig: CUDA programs in containers will not find the driver");
        foreach (var b in DriverBinaries)
            if (FindBinary(o.BinaryDirectories, b) is { } path)
                mounts.Add(new GpuMount(ResolveFile(path), $"/usr/bin/{b}", GpuMount.ReadOnlyOptions));

        var source = "nvidia:" + string.Join("+", new[] { proc.Count > 0 ? "proc" : null, smi.Count > 0 ? "nvidia-smi" : null, "dev" }.Where(x => x is not null));
        return new Result(gpus, new GpuContainerEdits { DeviceNodes = nodes, Mounts = mounts }, source) { ByMinor = byMinor };
    }

    /// <summary>One /proc/driver/nvidia/gpus/BUS/information file ("Model: \t NVIDIA H100 …").</summary>
    public static ProcGpuInfo ParseProcInformation(string text)
    {
        var fields = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (var line in text.Split('\n'))
        {
            var colon = line.IndexOf(':');
            if (colon <= 0) continue;
            fields.TryAdd(line[..colon].Trim(), line[(colon + 1)..].Trim());
        }
        int? minor = fields.TryGetValue("Device Minor", out var dm) && int.TryParse(dm, NumberStyles.None, CultureInfo.InvariantCulture, out var mi) ? mi : null;
        var uuid = fields.GetValueOrDefault("GPU UUID");
        if (uuid is not null && !uuid.StartsWith("GPU-", StringComparison.Ordinal)) uuid = null; // "??" without privileges
        return new ProcGpuInfo(fields.GetValueOrDefault("Model"), uuid, fields.GetValueOrDefault("Bus Location"), minor);
    }

    /// <summary>`nvidia-smi --query-gpu=index,uuid,name,memory.total[,pci.bus_id] --format=csv,noheader,nounits`.</summary>
    public static IReadOnlyList<SmiGpu> ParseSmiCsv(string text)
    {
        var list = new List<SmiGpu>();
        foreach (var raw in text.Split('\n'))
        {
            var line = raw.Trim();
            if (line.Length == 0) continue;
            var f = line.Split(',').Select(x => x.Trim()).ToArray();
            if (f.Length < 4 || !int.TryParse(f[0], NumberStyles.None, CultureInfo.InvariantCulture, out var index))
                throw new FormatException($"unexpected nvidia-smi line \"{line}\"");
            list.Add(new SmiGpu(index, f[1], f[2], ParseSmiNumber(f[3]) is { } mem ? (long)mem : null, f.Length > 4 ? f[4] : null));
        }
        return list;
    }

    /// <summary>A number field of nvidia-smi CSV; "[N/A]", "[Not Supported]" and the like are null.</summary>
    public static double? ParseSmiNumber(string field) =>
        double.TryParse(field.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out var v) ? v : null;

    /// <summary>`ldconfig -p`: soname → path for libraries of <paramref name="arch"/> ("x86-64", "AArch64"), first (highest-priority) entry kept.</summary>
    public static IReadOnlyDictionary<string, string> ParseLdconfig(string text, string arch)
    {
        var libs = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var raw in text.Split('\n'))
        {
            var line = raw.Trim();
            var arrow = line.IndexOf(" => ", StringComparison.Ordinal);
            var paren = line.IndexOf(" (", StringComparison.Ordinal);
            if (arrow < 0 || paren < 0 || paren > arrow) continue;
            var soname = line[..paren];
            var flags = line[(paren + 2)..line.LastIndexOf(')', arrow)];
            if (!flags.Split(',').Select(x => x.Trim()).Contains(arch)) continue;
            libs.TryAdd(soname, line[(arrow + 4)..].Trim());
        }
        return libs;
    }

    /// <summary>
    /// Mounts for the libraries whose soname starts with one of <paramref name="prefixes"/> and has a version
    /// (libcuda.so.1, not the development link libcuda.so): the real file is bound at the soname's path, so
    /// dlopen("libcuda.so.1") finds it by name even before ld.so.cache knows it.
    /// </summary>
    public static IReadOnlyList<GpuMount> LibraryMounts(IReadOnlyDictionary<string, string> ldconfig, IReadOnlyList<string> prefixes, Func<string, string>? resolve = null)
    {
        resolve ??= ResolveFile;
        var mounts = new List<GpuMount>();
        foreach (var (soname, path) in ldconfig.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            if (!prefixes.Any(p => soname.StartsWith(p + ".", StringComparison.Ordinal))) continue;
            mounts.Add(new GpuMount(resolve(path), path, GpuMount.ReadOnlyOptions));
        }
        return mounts;
    }

    public static string LdconfigArch() => RuntimeInformation.ProcessArchitecture switch
    {
        Architecture.Arm64 => "AArch64",
        _ => "x86-64",
    };

    /// <summary>
    /// The first <paramref name="name"/> in <paramref name="dirs"/> that is not a script, else the first found.
    /// Some hosts put a wrapper script in /usr/bin that execs the real tool from a driver mount
    /// (/usr/local/nvidia/bin, seen on a GPU VM): bound alone, the wrapper finds nothing in the container.
    /// </summary>
    internal static string? FindBinary(IEnumerable<string> dirs, string name)
    {
        var found = dirs.Select(d => Path.Combine(d, name)).Where(File.Exists).ToList();
        return found.FirstOrDefault(f => !IsScript(f)) ?? found.FirstOrDefault();
    }

    private static bool IsScript(string path)
    {
        try
        {
            using var f = File.OpenRead(path);
            Span<byte> head = stackalloc byte[2];
            return f.Read(head) == 2 && head[0] == (byte)'#' && head[1] == (byte)'!';
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return false; }
    }

    /// <summary>The file a chain of symlinks ends at (a bind mount of a link would bind its target anyway; naming it makes the spec honest).</summary>
    private static string ResolveFile(string path)
    {
        try { return new FileInfo(path).ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? path; }
        catch (IOException) { return path; }
    }

    private static bool Exists(string path) => File.Exists(path) || Directory.Exists(path) || new FileInfo(path).LinkTarget is not null;
}
