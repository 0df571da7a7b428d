using BatchRunner.Oci;
using BatchRunner.Oci.Registry;
using BatchRunner.Oci.Snapshots;
using BatchRunner.Oci.Store;
using BatchRunner.Runtime;
using BatchRunner.Server.Execution;
using BatchRunner.Server.Scheduling;
using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Hosting;

/// <summary>Construction of the worker's image, snapshot and runtime components from configuration.</summary>
internal static partial class Components
{
    public static ImageStore CreateImageStore(BatchRunnerOptions options, DataPaths paths, IServiceProvider sp)
    {
        var credentials = options.Registries
            .Where(r => !string.IsNullOrWhiteSpace(r.Registry))
            .Select(r => new RegistryCredential(r.Registry.Trim(), r.Username, r.Password, r.IdentityToken))
            .ToList();
        return new ImageStore(new ImageStoreOptions
        {
            Root = paths.Images,
            // Explicit configuration wins: the Docker config is asked only for registries not listed here.
            Credentials = credentials,
            CredentialSource = DockerConfigSource(options, sp),
            InsecureRegistries = options.InsecureRegistries,
            SpaceCheck = sp.GetRequiredService<NodeDisk>().WhyNoRoomFor,
            RegistryPolicy = options.RegistryPolicy(),
        }, sp.GetRequiredService<ILogger<ImageStore>>());
    }

    // The file is read once here; its credential helpers run when a pull needs them, so renewed tokens are seen.
    private static DockerConfigCredentialSource? DockerConfigSource(BatchRunnerOptions options, IServiceProvider sp)
    {
        if (string.IsNullOrWhiteSpace(options.DockerConfigPath)) return null;
        var config = DockerConfigCredentials.Load(options.DockerConfigPath);
        var helpers = new CredentialHelper(
            string.IsNullOrWhiteSpace(options.CredentialHelperPath) ? null : options.CredentialHelperPath,
            logger: sp.GetRequiredService<ILogger<CredentialHelper>>());
        return new DockerConfigCredentialSource(config, helpers);
    }

    /// <summary>What this node offers to jobs (GPUs are added from the inventory): the configured CPUs and memory,
    /// else the machine's CPUs and its memory less a reserve for the host itself (10%, at most 2Gi).</summary>
    public static NodeCapacity Capacity(BatchRunnerOptions options)
    {
        return new NodeCapacity(options.Capacity.Cpus ?? Environment.ProcessorCount, options.CapacityMemoryBytes() ?? MachineMemoryBytes(), 0);
    }

    /// <summary>MemTotal from /proc/meminfo, less a reserve for the host itself.</summary>
    private static long MachineMemoryBytes()
    {
        foreach (var line in File.ReadLines("/proc/meminfo"))
        {
            if (!line.StartsWith("MemTotal:", StringComparison.Ordinal)) continue;
            var kb = long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], System.Globalization.CultureInfo.InvariantCulture);
            var total = kb * 1024;
            return total - Math.Min(total / 10, 2L << 30);
        }
        return 1L << 30;
    }

    public static ISnapshotter CreateSnapshotter(IServiceProvider sp) => new OverlaySnapshotter(sp.GetRequiredService<ILogger<OverlaySnapshotter>>());

    /// <summary>Picks the OCI runtime once at start-up; the choice and why are logged and shown in /healthz.</summary>
    public static async Task<RuntimeSelection> SelectRuntimeAsync(BatchRunnerOptions options, ILogger log, CancellationToken ct)
    {
        var selection = await new RuntimeDetector().DetectAsync(options.Runtime, ct);
        LogRuntime(log, selection.Name, selection.Version, selection.Path, selection.Reason);
        return selection;
    }

    public static IContainerRuntime CreateRuntime(RuntimeSelection selection, DataPaths paths, IServiceProvider sp) =>
        new RuncRuntime(RuntimeOptionsFor(selection, paths, IsolationOf(sp)), sp.GetRequiredService<ILogger<RuncRuntime>>());

    [LoggerMessage(Level = LogLevel.Information, Message = "OCI runtime: {Name} {Version} ({Path}): {Reason}")]
    private static partial void LogRuntime(ILogger log, string name, string version, string path, string reason);
}
