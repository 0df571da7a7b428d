using BatchRunner.Runtime.Gpus;

namespace BatchRunner.Runtime.Tests.Gpus;

public sealed class GpuDiscoveryFacts : IDisposable
{
    private readonly GpuTestNode _node = new(Path.Combine("/tmp/batchrunner-runtime-tests", "gpu-discovery-" + Guid.NewGuid().ToString("N")[..8]));

    public void Dispose() => _node.Dispose();

    [Theory]
    [InlineData("json")]
    [InlineData("yaml")]
    public async Task DiscoverAsync_ReadsGpusAndCommonEdits_FromCdiSpec(string format)
    {
        var inv = await _node.DiscoverAsync(format == "json" ? _node.JsonCdiDir : _node.YamlCdiDir);

        Assert.StartsWith("cdi:", inv.Source);
        Assert.Empty(inv.Warnings);
        Assert.Equal(2, inv.Gpus.Count); // "all" is an aggregate, not a GPU
        Assert.Equal([0, 1], inv.Gpus.Select(g => g.Index));
        Assert.Equal(["GPU-test-0", "GPU-test-1"], inv.Gpus.Select(g => g.Uuid));
        Assert.Equal("nvidia.com/gpu=1", inv.Gpus[1].Name);
        Assert.Equal("Test GPU H100", inv.Gpus[1].Model);
        Assert.Equal(2L << 30, inv.Gpus[1].MemoryBytes);
        var node = Assert.Single(inv.Gpus[1].Edits.DeviceNodes);
        Assert.Equal("/dev/nvidia1", node.Path);
        Assert.Equal(Path.Combine(_node.DevDir, "nvidia1"), node.HostPath);

        Assert.Equal("/dev/nvidiactl", Assert.Single(inv.Common.DeviceNodes).Path);
        var mount = Assert.Single(inv.Common.Mounts);
        Assert.Equal((_node.LibraryPath, GpuTestNode.LibraryContainerPath), (mount.HostPath, mount.ContainerPath));
        Assert.Equal(["ro", "nosuid", "nodev", "bind"], mount.Options);
        Assert.Equal(["NVIDIA_DRIVER_CAPABILITIES=compute,utility"], inv.Common.Env);

        var cap = inv.Capacity;
        Assert.Equal(2, cap.Count);
        Assert.Equal(3L << 30, cap.TotalMemoryBytes);
        Assert.Equal(1, cap.Models["Test GPU A100"]);
    }

    [Fact]
    public async Task DiscoverAsync_SkipsMalformedSpec_WithWarning()
    {
        var dir = Path.Combine(_node.Dir, "cdi-bad");
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "a.yaml"), "kind: nvidia.com/gpu\ndevices: [ { name: 0, containerEdits: { deviceNodes: [ { hostPath: /x } ] } } ]\n");
        File.WriteAllText(Path.Combine(dir, "b.json"), "{ not json");
        var inv = await _node.DiscoverAsync(dir);
        Assert.Empty(inv.Gpus);
        Assert.Equal("none", inv.Source);
        Assert.Equal(2, inv.Warnings.Count);
        Assert.Contains(inv.Warnings, w => w.Contains("a.yaml") && w.Contains("no path"));
    }

    [Fact]
    public async Task DiscoverAsync_ReturnsNone_WhenNoCdiAndNoDriver()
    {
        var inv = await GpuInventory.DiscoverAsync(new GpuDiscoveryOptions
        {
            CdiDirectories = [Path.Combine(_node.Dir, "missing")],
            DevDirectory = Path.Combine(_node.Dir, "lib"), // no nvidia* nodes there
            ProcDriverDirectory = Path.Combine(_node.Dir, "missing-proc"),
        });
        Assert.Empty(inv.Gpus);
        Assert.True(inv.Common.IsEmpty);
    }

    // Captured on a DGX-like host (driver 550), trimmed.
    internal const string ProcInformation = """
        Model: 		 NVIDIA H100 80GB HBM3
        IRQ:   		 316
        GPU UUID: 	 GPU-5e2f6a34-0c3f-8a1b-3d0e-6f1c2b9a7d41
        Video BIOS: 	 96.00.99.00.01
        Bus Type: 	 PCIe
        DMA Size: 	 52 bits
        DMA Mask: 	 0xfffffffffffff
        Bus Location: 	 0000:18:00.0
        Device Minor: 	 3
        GPU Excluded:	 No
        """;

    internal const string SmiCsv = """
        0, GPU-11111111-2222-3333-4444-555555555555, NVIDIA H100 80GB HBM3, 81559, 00000000:0F:00.0
        1, GPU-5e2f6a34-0c3f-8a1b-3d0e-6f1c2b9a7d41, NVIDIA H100 80GB HBM3, 81559, 00000000:18:00.0

        """;

    internal const string Ldconfig = """
        1325 libs found in cache `/etc/ld.so.cache'
        	libnvidia-ml.so.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libnvidia-ml.so.1
        	libnvidia-ml.so (libc6,x86-64) => /lib/x86_64-linux-gnu/libnvidia-ml.so
        	libnvidia-ptxjitcompiler.so.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libnvidia-ptxjitcompiler.so.1
        	libnvidia-nvvm.so.4 (libc6,x86-64) => /lib/x86_64-linux-gnu/libnvidia-nvvm.so.4
        	libcudadebugger.so.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libcudadebugger.so.1
        	libcuda.so.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libcuda.so.1
        	libcuda.so.1 (libc6) => /lib/i386-linux-gnu/libcuda.so.1
        	libcuda.so (libc6,x86-64) => /lib/x86_64-linux-gnu/libcuda.so
        	libcudart.so.12 (libc6,x86-64) => /usr/local/cuda/lib64/libcudart.so.12
        	libc.so.6 (libc6,x86-64, OS ABI: Linux 3.2.0) => /lib/x86_64-linux-gnu/libc.so.6
        """;

    [Fact]
    public void ParseProcInformation_ReadsModelUuidBusAndMinor()
    {
        var info = NvidiaDiscovery.ParseProcInformation(ProcInformation);
        Assert.Equal(new NvidiaDiscovery.ProcGpuInfo("NVIDIA H100 80GB HBM3", "GPU-5e2f6a34-0c3f-8a1b-3d0e-6f1c2b9a7d41", "0000:18:00.0", 3), info);
        Assert.Null(NvidiaDiscovery.ParseProcInformation("Model: x\nGPU UUID: \t ??\n").Uuid);
    }

    [Fact]
    public void ParseSmiCsv_ReadsIndexUuidNameAndMemory()
    {
        var gpus = NvidiaDiscovery.ParseSmiCsv(SmiCsv);
        Assert.Equal(2, gpus.Count);
        Assert.Equal(new NvidiaDiscovery.SmiGpu(1, "GPU-5e2f6a34-0c3f-8a1b-3d0e-6f1c2b9a7d41", "NVIDIA H100 80GB HBM3", 81559, "00000000:18:00.0"), gpus[1]);
        var four = Assert.Single(NvidiaDiscovery.ParseSmiCsv("0, GPU-a, Tesla T4, [N/A]\n"));
        Assert.Null(four.MemoryTotalMiB);
        Assert.Throws<FormatException>(() => NvidiaDiscovery.ParseSmiCsv("No devices were found\n"));
    }

    [Fact]
    public void ParseLdconfig_KeepsDriverLibrariesOfThisArchitecture_WithVersionedSonames()
    {
        var libs = NvidiaDiscovery.ParseLdconfig(Ldconfig, "x86-64");
        Assert.Equal("/lib/x86_64-linux-gnu/libcuda.so.1", libs["libcuda.so.1"]); // not the i386 one
        Assert.Equal("/lib/x86_64-linux-gnu/libc.so.6", libs["libc.so.6"]);
        var mounts = NvidiaDiscovery.LibraryMounts(libs, NvidiaDiscovery.DriverLibraries, p => p.Replace(".so.1", ".so.550.54.15"));
        Assert.Equal(
            ["libcuda.so.1", "libcudadebugger.so.1", "libnvidia-ml.so.1", "libnvidia-nvvm.so.4", "libnvidia-ptxjitcompiler.so.1"],
            mounts.Select(m => Path.GetFileName(m.ContainerPath)));
        var cuda = mounts[0];
        Assert.Equal("/lib/x86_64-linux-gnu/libcuda.so.550.54.15", cuda.HostPath);
        Assert.Equal(["ro", "nosuid", "nodev", "bind"], cuda.Options);
    }

    [Fact]
    public async Task DiscoverAsync_UsesNvidiaDiscovery_WhenNoCdiSpec()
    {
        // A captured driver tree: /dev/nvidia3 + control nodes, /proc/driver/nvidia/gpus/BUS/information,
        // and scripts standing in for nvidia-smi and ldconfig that print captured output.
        var root = Path.Combine(_node.Dir, "nvidia-host");
        var dev = Path.Combine(root, "dev");
        var gpus = Path.Combine(root, "proc", "gpus", "0000:18:00.0");
        Directory.CreateDirectory(dev);
        Directory.CreateDirectory(gpus);
        foreach (var n in new[] { "nvidia3", "nvidiactl", "nvidia-uvm", "nvidia-modeset" }) File.WriteAllText(Path.Combine(dev, n), "");
        File.WriteAllText(Path.Combine(gpus, "information"), ProcInformation);
        var smi = Script(root, "nvidia-smi", SmiCsv);
        var ldconfig = Script(root, "ldconfig", Ldconfig);

        var inv = await GpuInventory.DiscoverAsync(new GpuDiscoveryOptions
        {
            CdiDirectories = [Path.Combine(root, "no-cdi")],
            DevDirectory = dev,
            ProcDriverDirectory = Path.Combine(root, "proc"),
            NvidiaSmiPath = smi,
            LdconfigPath = ldconfig,
            BinaryDirectories = [Path.Combine(root, "no-bin")],
        });

        Assert.Equal("nvidia:proc+nvidia-smi+dev", inv.Source);
        var gpu = Assert.Single(inv.Gpus);
        Assert.Equal((1, "GPU-5e2f6a34-0c3f-8a1b-3d0e-6f1c2b9a7d41", "NVIDIA H100 80GB HBM3", 81559L * 1024 * 1024, "0000:18:00.0"),
            (gpu.Index, gpu.Uuid, gpu.Model, gpu.MemoryBytes, gpu.PciBusId));
        Assert.Equal(new GpuDeviceNode("/dev/nvidia3", Path.Combine(dev, "nvidia3")), Assert.Single(gpu.Edits.DeviceNodes));
        Assert.Equal(["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-modeset"], inv.Common.DeviceNodes.Select(d => d.Path));
        Assert.Contains(inv.Common.Mounts, m => m.ContainerPath == "/lib/x86_64-linux-gnu/libcuda.so.1");
        Assert.Contains(inv.Common.Mounts, m => m.ContainerPath == "/lib/x86_64-linux-gnu/libnvidia-ml.so.1");
    }

    [Fact]
    public void FindBinary_PrefersTheRealTool_OverAWrapperScript()
    {
        // Seen on a GPU VM: /usr/bin/nvidia-smi is "#!/bin/sh ... exec /usr/local/nvidia/bin/nvidia-smi".
        var usrBin = Path.Combine(_node.Dir, "usr-bin");
        var driverBin = Path.Combine(_node.Dir, "driver-bin");
        Directory.CreateDirectory(usrBin);
        Directory.CreateDirectory(driverBin);
        File.WriteAllText(Path.Combine(usrBin, "nvidia-smi"), "#!/bin/sh\nexec /usr/local/nvidia/bin/nvidia-smi \"$@\"\n");
        File.WriteAllBytes(Path.Combine(driverBin, "nvidia-smi"), [0x7F, (byte)'E', (byte)'L', (byte)'F']);
        Assert.Equal(Path.Combine(driverBin, "nvidia-smi"), NvidiaDiscovery.FindBinary([usrBin, driverBin], "nvidia-smi"));
        Assert.Equal(Path.Combine(usrBin, "nvidia-smi"), NvidiaDiscovery.FindBinary([usrBin], "nvidia-smi"));
    }

    private static string Script(string dir, string name, string output)
    {
        var data = Path.Combine(dir, name + ".out");
        File.WriteAllText(data, output);
        var path = Path.Combine(dir, name);
        File.WriteAllText(path, $"#!/bin/sh\ncat '{data}'\n");
        File.SetUnixFileMode(path, (UnixFileMode)0b111_101_101);
        return path;
    }

    [Fact]
    public void NvidiaSmiMetricsSource_Parse_ReadsFieldsAndNullsForNotAvailable()
    {
        var at = DateTimeOffset.UnixEpoch;
        var samples = NvidiaSmiMetricsSource.Parse("GPU-a, 87, 40536, 81559, 61, 512.34\nGPU-b, [N/A], 0, 81559, 30, [Not Supported]\n", at);
        Assert.Equal(new GpuSample("GPU-a", 87, 40536L << 20, 81559L << 20, 61, 512.34, at), samples[0]);
        Assert.Null(samples[1].UtilizationPercent);
        Assert.Null(samples[1].PowerWatts);
    }
}
