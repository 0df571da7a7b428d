namespace BatchRunner.Server.Storage;

/// <summary>
/// The layout of the data directory. Job directories (logs, outputs) outlive their containers; run
/// directories (the job's disk, with its rootfs) exist only while a container does and are swept at start-up, as is
/// <see cref="State"/>, a tmpfs for the runtime's state and the containers' bundles.
/// </summary>
public sealed class DataPaths(string root)
{
    public string Root { get; } = root;
    public string Images => Path.Combine(Root, "images");
    public string RunRoot => Path.Combine(Root, "run");
    /// <summary>A tmpfs the node mounts (<c>Execution.StateFilesystem</c>): what lives only as long as a container and is
    /// not the job's data. Holds <see cref="RuntimeState"/> and <see cref="Bundles"/>.</summary>
    public string State => Path.Combine(Root, "state");
    /// <summary>The OCI runtime's state root (<c>runc --root</c>).</summary>
    public string RuntimeState => Path.Combine(State, "runc");
    /// <summary>Parent of every container's bundle (config.json, runc's log, the pid file, the stdout/stderr FIFOs).</summary>
    public string Bundles => Path.Combine(State, "bundles");
    public string Bundle(string containerId) => Path.Combine(Bundles, containerId);
    /// <summary>The runtime's state root before 2026-11-30 (on the data disk); swept once by a node that finds it.</summary>
    public string LegacyRuntimeState => Path.Combine(Root, "runtime");
    /// <summary>Parent of every job's directory.</summary>
    public string JobsRoot => Path.Combine(Root, "jobs");
    public string JobDir(Guid id) => Path.Combine(JobsRoot, id.ToString("N"));
    public string Outputs(Guid id) => Path.Combine(JobDir(id), "outputs");
    public string Stdout(Guid id) => Path.Combine(JobDir(id), "stdout.log");
    public string Stderr(Guid id) => Path.Combine(JobDir(id), "stderr.log");
    public string RunDir(string containerId) => Path.Combine(RunRoot, containerId);
    /// <summary>Files given at submission, mounted read-only at /inputs; absent when there were none.</summary>
    public string Inputs(Guid id) => Path.Combine(JobDir(id), "inputs");
    /// <summary>Uploads being received, and inputs being unpacked by the node that runs their job (then moved to
    /// <see cref="Inputs"/>).</summary>
    public string InputsStaging => Path.Combine(Root, "inputs-staging");
    /// <summary>The inputs tars this node took at submission, named by digest (<see cref="InputsStore"/>).</summary>
    public string InputsStore => Path.Combine(Root, "inputs");
    /// <summary>Admin-configured datasets: name → host directory (BatchRunner:Isolation:Datasets).</summary>
    public IReadOnlyDictionary<string, string> Datasets { get; init; } = new Dictionary<string, string>();

}
