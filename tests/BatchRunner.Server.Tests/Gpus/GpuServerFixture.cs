using BatchRunner.Server.Hosting;
using BatchRunner.Testing;
using Microsoft.AspNetCore.Builder;

namespace BatchRunner.Server.Tests.Gpus;

/// <summary>
/// A real server on a node with two test GPUs, named by a CDI spec this fixture writes: device nodes
/// made with mknod (the numbers of /dev/zero and /dev/null, harmless to open), a "driver library" file
/// bind-mounted into GPU jobs, and a fake nvidia-smi that reports fixed utilisation and memory.
/// </summary>
public sealed class GpuServerFixture : IAsyncLifetime
{
    public const string ApiKey = "gpu-key-31c9";
    public const string LibraryContainerPath = "/usr/lib/x86_64-linux-gnu/libcuda.so.1";

    public string Dir { get; } = Path.Combine("/tmp", "br-gpu-tests-" + Guid.NewGuid().ToString("N")[..8]);
    public WebApplication App { get; private set; } = null!;
    public BatchRunnerClient Api { get; private set; } = null!;
    public HttpClient Client => Api.Http;
    public TestRegistry Registry { get; private set; } = null!;
    public string Busybox { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        var dev = Path.Combine(Dir, "dev");
        var cdi = Path.Combine(Dir, "cdi");
        Directory.CreateDirectory(dev);
        Directory.CreateDirectory(cdi);
        await ExternalCommand.RunAsync("mknod", ["-m", "0666", Path.Combine(dev, "nvidia0"), "c", "1", "5"]);
        await ExternalCommand.RunAsync("mknod", ["-m", "0666", Path.Combine(dev, "nvidia1"), "c", "1", "5"]);
        await ExternalCommand.RunAsync("mknod", ["-m", "0666", Path.Combine(dev, "nvidiactl"), "c", "1", "3"]);
        var lib = Path.Combine(Dir, "libcuda.so.1");
        File.WriteAllText(lib, "fake driver library\n");
        File.WriteAllText(Path.Combine(cdi, "nvidia.json"), $$"""
            { "cdiVersion": "0.6.0", "kind": "nvidia.com/gpu",
              "devices": [
                { "name": "0", "annotations": { "batchrunner.io/gpu-uuid": "GPU-test-0", "batchrunner.io/gpu-model": "Test GPU", "batchrunner.io/gpu-memory-bytes": "1073741824" },
                  "containerEdits": { "deviceNodes": [ { "path": "/dev/nvidia0", "hostPath": "{{dev}}/nvidia0" } ] } },
                { "name": "1", "annotations": { "batchrunner.io/gpu-uuid": "GPU-test-1", "batchrunner.io/gpu-model": "Test GPU", "batchrunner.io/gpu-memory-bytes": "1073741824" },
                  "containerEdits": { "deviceNodes": [ { "path": "/dev/nvidia1", "hostPath": "{{dev}}/nvidia1" } ] } } ],
              "containerEdits": {
                "deviceNodes": [ { "path": "/dev/nvidiactl", "hostPath": "{{dev}}/nvidiactl" } ],
                "mounts": [ { "hostPath": "{{lib}}", "containerPath": "{{LibraryContainerPath}}", "options": [ "ro", "nosuid", "nodev", "bind" ] } ] } }
            """);
        var smi = Path.Combine(Dir, "nvidia-smi");
        File.WriteAllText(smi, """
            #!/bin/sh
            case "$*" in
              *utilization.gpu*) echo "GPU-test-0, 37, 512, 1024, 50, 120.5"; echo "GPU-test-1, 81, 768, 1024, 60, 200.0" ;;
              *) echo "no driver" >&2; exit 9 ;;
            esac
            """);
        File.SetUnixFileMode(smi, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);

        Registry = await TestRegistry.StartAsync();
        Busybox = await TestImages.PushBusyboxAsync(Registry);
        App = await BatchRunnerApp.BuildAsync([
            "--urls", "http://127.0.0.1:0",
            $"--BatchRunner:DataDir={Path.Combine(Dir, "data")}",
            .. TestRegistry.ServerArgs,
            $"--BatchRunner:ApiKey={ApiKey}",
            "--BatchRunner:Workers=4",
            "--BatchRunner:NodeName=gpu-node",
            $"--BatchRunner:Gpus:CdiDirectories:0={cdi}",
            $"--BatchRunner:Gpus:NvidiaSmiPath={smi}",
            "--BatchRunner:Gpus:SampleSeconds=1",
            "--Logging:LogLevel:Default=Warning",
        ]);
        (Api, _) = await InProcessHost.StartAsync(App, ApiKey);
    }

    public async Task DisposeAsync()
    {
        Api?.Dispose();
        await InProcessHost.StopAsync(App);
        if (Registry is not null) await Registry.DisposeAsync();
        try { Directory.Delete(Dir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}

[CollectionDefinition(Name)]
public sealed class GpuServerCollection : ICollectionFixture<GpuServerFixture>
{
    public const string Name = "gpu-server";
}
