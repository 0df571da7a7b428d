using System.Diagnostics;
using BatchRunner.Runtime.Gpus;

namespace BatchRunner.Runtime.Tests.Gpus;

/// <summary>
/// A fake two-GPU node under a temp dir: device nodes made with mknod (GPU 0 with /dev/zero's 1:5, GPU 1
/// with /dev/loop-control's 10:237, which runc's default allow list does not contain, so the device cgroup
/// is what decides; nvidiactl with /dev/null's 1:3), a "driver library" file, and CDI specs naming them
/// (the same spec as JSON and as YAML).
/// </summary>
public sealed class GpuTestNode : IDisposable
{
    public const string LibraryContent = "fake NVIDIA driver library\n";
    public const string LibraryContainerPath = "/usr/lib/x86_64-linux-gnu/libcuda.so.1";

    public string Dir { get; }
    public string DevDir => Path.Combine(Dir, "dev");
    public string JsonCdiDir => Path.Combine(Dir, "cdi-json");
    public string YamlCdiDir => Path.Combine(Dir, "cdi-yaml");
    public string LibraryPath => Path.Combine(Dir, "lib", "libcuda.so.1");

    public GpuTestNode(string dir)
    {
        Dir = dir;
        Directory.CreateDirectory(DevDir);
        Directory.CreateDirectory(Path.GetDirectoryName(LibraryPath)!);
        Directory.CreateDirectory(JsonCdiDir);
        Directory.CreateDirectory(YamlCdiDir);
        Mknod(Path.Combine(DevDir, "nvidia0"), 1, 5);
        Mknod(Path.Combine(DevDir, "nvidia1"), 10, 237);
        Mknod(Path.Combine(DevDir, "nvidiactl"), 1, 3);
        File.WriteAllText(LibraryPath, LibraryContent);
        File.WriteAllText(Path.Combine(JsonCdiDir, "nvidia.json"), Json);
        File.WriteAllText(Path.Combine(YamlCdiDir, "nvidia.yaml"), Yaml);
    }

    public GpuDiscoveryOptions Options(string cdiDir) => new()
    {
        CdiDirectories = [cdiDir],
        UseNvidiaDiscovery = false,
    };

    public Task<GpuInventory> DiscoverAsync(string cdiDir) => GpuInventory.DiscoverAsync(Options(cdiDir));

    private string Json => $$"""
        {
          "cdiVersion": "0.6.0",
          "kind": "nvidia.com/gpu",
          "devices": [
            { "name": "0",
              "annotations": { "batchrunner.io/gpu-uuid": "GPU-test-0", "batchrunner.io/gpu-model": "Test GPU A100", "batchrunner.io/gpu-memory-bytes": "1073741824" },
              "containerEdits": { "deviceNodes": [ { "path": "/dev/nvidia0", "hostPath": "{{DevDir}}/nvidia0" } ] } },
            { "name": "1",
              "annotations": { "batchrunner.io/gpu-uuid": "GPU-test-1", "batchrunner.io/gpu-model": "Test GPU H100", "batchrunner.io/gpu-memory-bytes": "2147483648" },
              "containerEdits": { "deviceNodes": [ { "path": "/dev/nvidia1", "hostPath": "{{DevDir}}/nvidia1" } ] } },
            { "name": "all",
              "containerEdits": { "deviceNodes": [ { "path": "/dev/nvidia0", "hostPath": "{{DevDir}}/nvidia0" }, { "path": "/dev/nvidia1", "hostPath": "{{DevDir}}/nvidia1" } ] } }
          ],
          "containerEdits": {
            "env": [ "NVIDIA_DRIVER_CAPABILITIES=compute,utility" ],
            "deviceNodes": [ { "path": "/dev/nvidiactl", "hostPath": "{{DevDir}}/nvidiactl" } ],
            "mounts": [ { "hostPath": "{{LibraryPath}}", "containerPath": "{{LibraryContainerPath}}", "options": [ "ro", "nosuid", "nodev", "bind" ] } ]
          }
        }
        """;

    private string Yaml => $"""
        ---
        cdiVersion: 0.6.0
        kind: nvidia.com/gpu
        devices:
        - name: "0"
          annotations:
            batchrunner.io/gpu-uuid: GPU-test-0
            batchrunner.io/gpu-model: Test GPU A100
            batchrunner.io/gpu-memory-bytes: "1073741824"
          containerEdits:
            deviceNodes:
            - path: /dev/nvidia0
              hostPath: {DevDir}/nvidia0
        - name: "1"
          annotations:
            batchrunner.io/gpu-uuid: GPU-test-1
            batchrunner.io/gpu-model: Test GPU H100
            batchrunner.io/gpu-memory-bytes: "2147483648"
          containerEdits:
            deviceNodes:
            - path: /dev/nvidia1
              hostPath: {DevDir}/nvidia1
        - name: all
          containerEdits:
            deviceNodes:
            - path: /dev/nvidia0
              hostPath: {DevDir}/nvidia0
            - path: /dev/nvidia1
              hostPath: {DevDir}/nvidia1
        containerEdits:
          env:
          - NVIDIA_DRIVER_CAPABILITIES=compute,utility
          deviceNodes:
          - path: /dev/nvidiactl
            hostPath: {DevDir}/nvidiactl
          mounts:
          - hostPath: {LibraryPath}
            containerPath: {LibraryContainerPath}
            options: [ro, nosuid, nodev, bind]
        """;

    private static void Mknod(string path, int major, int minor)
    {
        using var p = Process.Start(new ProcessStartInfo("mknod", ["-m", "0666", path, "c", major.ToString(), minor.ToString()]) { RedirectStandardError = true })!;
        var err = p.StandardError.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0) throw new InvalidOperationException($"mknod {path} failed: {err}");
    }

    public void Dispose()
    {
        if (Directory.Exists(Dir)) Directory.Delete(Dir, recursive: true);
    }
}
