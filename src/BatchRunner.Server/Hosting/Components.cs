using BatchRunner.Oci;
using BatchRunner.Oci.Registry;
using BatchRunner.Oci.Snapshots;
using BatchRunner.Oci.Store;
using BatchRunner.Runtime;
using BatchRunner.Server.Execution;

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
        // Explicit configuration wins over a Docker config.json entry for the same registry.
        if (!string.IsNullOrWhiteSpace(options.DockerConfigPath))
            credentials.AddRange(DockerConfigCredentials.Load(options.DockerConfigPath)
                .Where(c => credentials.All(x => !string.Equals(x.Registry, c.Registry, StringComparison.OrdinalIgnoreCase))));
        return new ImageStore(new ImageStoreOptions
        {
            Root = paths.Images,
            Credentials = credentials,
            InsecureRegistries = options.InsecureRegistries,
        }, sp.GetRequiredService<ILogger<ImageStore>>());
    }

    public static Nodes.NodeCapacity Capacity(BatchRunnerOptions options)
    {
        long? memory = null;
        if (!string.IsNullOrWhiteSpace(options.Capacity.Memory))
            memory = Core.Quantity.TryParseBytes(options.Capacity.Memory, out var m) ? m
                : throw new InvalidOperationException($"BatchRunner:Capacity:Memory \"{options.Capacity.Memory}\" is not a quantity");
        return Nodes.NodeCapacity.FromMachine(options.Capacity.Cpus, memory);
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
