namespace BatchRunner.Server.Hosting;

/// <summary>
/// Configuration section "BatchRunner". Every key can also be set with an environment variable
/// (BATCHRUNNER_DATA_DIR, BATCHRUNNER_API_KEY, ...: see <see cref="EnvironmentShortcuts"/>).
/// </summary>
public sealed class BatchRunnerOptions
{
    public const string Section = "BatchRunner";

    /// <summary>Where jobs' logs and outputs, the image cache, the embedded PostgreSQL and the API key live.</summary>
    public string DataDir { get; set; } = DefaultDataDir();

    /// <summary>Bearer key for the API. Unset: read DATA/api-key, or generate and store one on first start.</summary>
    public string? ApiKey { get; set; }

    /// <summary>Npgsql connection string. Unset: BatchRunner runs its own PostgreSQL in DATA/postgres.</summary>
    public string? ConnectionString { get; set; }

    /// <summary>The URL other nodes reach this one at (for the logs and outputs of the jobs it ran); unset:
    /// the first address it listens on, a wildcard host replaced by the machine's host name.</summary>
    public string? AdvertiseUrl { get; set; }

    /// <summary>all (API + worker, the default), api, or worker.</summary>
    public string Role { get; set; } = "all";

    /// <summary>
    /// Hangfire workers of this process: the most jobs it runs at once. Unset: <see cref="DefaultWorkers"/>, enough to fill
    /// the node with small jobs. Admission (the CPUs, memory and GPUs jobs ask for) decides how many really run.
    /// </summary>
    public int? Workers { get; set; }

    /// <summary>Workers when none are configured: 8 per CPU offered (jobs of 1/8 CPU fill the node), at least 32, at most 512.
    /// An idle worker costs a blocked thread: one worker at a time fetches (see Storage/FairShareQueue), the rest wait in-process.</summary>
    public static int DefaultWorkers(double offeredCpus) => (int)Math.Clamp(Math.Ceiling(offeredCpus * 8), 32, 512);


    /// <summary>
    /// Queues this worker takes jobs from, highest priority first; submission accepts only these names.
    /// (An array, so configuring it replaces the default instead of appending to it.)
    /// </summary>
    public string[] Queues { get; set; } = ["default"];

    /// <summary>Cluster-wide limits on jobs starting or running at once, per queue (queue → limit).</summary>
    public Dictionary<string, int> QueueLimits { get; set; } = [];

    /// <summary>What this node offers to jobs. Unset parts: the machine's CPUs and memory.</summary>
    public CapacityOptions Capacity { get; set; } = new();

    /// <summary>Labels jobs can select this node by (nodeSelector).</summary>
    public Dictionary<string, string> Labels { get; set; } = [];

    public GpuOptions Gpus { get; set; } = new();

    /// <summary>Disk budget of this node's image cache ("50Gi"); unset: no automatic garbage collection.</summary>
    public string? ImageCacheBudget { get; set; }

    /// <summary>Seconds between image cache budget checks.</summary>
    public int ImageCacheCheckSeconds { get; set; } = 60;

    public long? ImageCacheBudgetBytes() =>
        string.IsNullOrWhiteSpace(ImageCacheBudget) ? null
        : Core.Quantity.TryParseBytes(ImageCacheBudget, out var b) ? b
        : throw new InvalidOperationException($"BatchRunner:ImageCacheBudget \"{ImageCacheBudget}\" is not a quantity");

    /// <summary>How long finished jobs are kept; default: until deleted.</summary>
    public RetentionSettings Retention { get; set; } = new();

    /// <summary>Seconds between writes of running jobs' usage (CPU, memory, GPUs so far) to their records.</summary>
    public int LiveUsageSeconds { get; set; } = 5;

    /// <summary>Per-job disk limits: enforced or not, the default and the largest resources.disk.</summary>
    public DiskOptions Disk { get; set; } = new();

    /// <summary>Free space the data directory keeps (a quantity): below it no new job starts, and pulls and imports
    /// that would cross it are refused. Unset: the larger of 5% of its filesystem and 2Gi.</summary>
    public string? MinFreeDisk { get; set; }

    public long? MinFreeDiskBytes() => DiskOptions.Parse(MinFreeDisk, "MinFreeDisk");

    /// <summary>Cap of each of a job's stdout and stderr on this node ("100Mi"); a job may ask for less (logs.maxBytes).
    /// Past it a stream keeps its first and last parts, with a marker line saying how many bytes were dropped.</summary>
    public string MaxLogBytes { get; set; } = "100Mi";

    public long MaxLogBytesValue() =>
        Core.Quantity.TryParseBytes(MaxLogBytes, out var b) && b >= Core.LogSettings.MinBytes ? b
        : throw new InvalidOperationException($"BatchRunner:MaxLogBytes \"{MaxLogBytes}\" must be a quantity of at least {Core.Quantity.FormatBytes(Core.LogSettings.MinBytes)}");

    /// <summary>The cap of a job's streams on this node: its own logs.maxBytes, never above the node's.</summary>
    public long LogCapFor(Core.JobSpec spec) => Math.Min(spec.Logs.MaxBytes ?? long.MaxValue, MaxLogBytesValue());

    /// <summary>Seconds between node heartbeats; a node is dead after three missed ones.</summary>
    public int HeartbeatSeconds { get; set; } = 5;

    /// <summary>On SIGTERM, how long running jobs may go on before they are stopped (with their own stop grace period:
    /// <see cref="StopGraceSeconds"/>) and requeued.</summary>
    public int ShutdownGraceSeconds { get; set; } = 30;

    /// <summary>A job's stopGraceSeconds when it names none: between the stop signal and SIGKILL on cancel, timeout
    /// and shutdown.</summary>
    public int StopGraceSeconds { get; set; } = Core.JobDefaults.StopGraceSeconds;

    /// <summary>The largest stopGraceSeconds a job may ask for (a larger one is refused at submission; a worker never
    /// waits longer). Shutdown takes up to ShutdownGraceSeconds + this.</summary>
    public int MaxStopGraceSeconds { get; set; } = 300;

    /// <summary>The longest a worker's shutdown can take with jobs running: their shutdown grace, then their stop grace.</summary>
    public TimeSpan JobsStopTimeout => TimeSpan.FromSeconds(ShutdownGraceSeconds + MaxStopGraceSeconds);

    /// <summary>Name of this worker node (default: the host name).</summary>
    public string NodeName { get; set; } = Environment.MachineName;

    /// <summary>auto (crun on pure cgroup v2 hosts where it works, else runc), runc, crun, or a path to a runtime binary.</summary>
    public string Runtime { get; set; } = "auto";

    /// <summary>Registry credentials, per registry host ("127.0.0.1:5000", "docker.io").</summary>
    public List<RegistryCredentialOptions> Registries { get; set; } = [];

    /// <summary>A Docker config.json whose "auths", "credHelpers" and "credsStore" give registry credentials for
    /// registries not in <see cref="Registries"/> (default: none). Helpers run when a pull needs credentials.</summary>
    public string? DockerConfigPath { get; set; }

    /// <summary>Directories searched for docker-credential-* helpers, ':'-separated (default: the PATH of this process).</summary>
    public string? CredentialHelperPath { get; set; }

    /// <summary>Network modes, capabilities, datasets, user namespaces and input limits of this node's jobs.</summary>
    public IsolationOptions Isolation { get; set; } = new();

    /// <summary>Encrypts the Data Protection key ring (which decrypts the jobs' secretEnv) before it is stored in the
    /// database; at least 32 characters, the same on every node. Unset: the ring is stored unencrypted.</summary>
    public string? SecretsKey { get; set; }

    /// <summary>API keys: how long a node caches a key lookup, and per-role request rates.</summary>
    public AuthOptions Auth { get; set; } = new();

    /// <summary>Calls to jobs' notify.url: signing key, allowed hosts, retries.</summary>
    public WebhookOptions Webhooks { get; set; } = new();

    /// <summary>Seconds between checks for queued jobs whose Hangfire message was deleted or lost (in the dashboard).</summary>
    public double ReconcileSeconds { get; set; } = 30;

    /// <summary>Registries reached over plain HTTP (loopback registries always are).</summary>
    public List<string> InsecureRegistries { get; set; } = [];

    /// <summary>
    /// Registries jobs may pull from, as host patterns: "*" (any host but loopback, link-local and cloud metadata
    /// addresses), "*.example.com", "ghcr.io", "127.0.0.1:5000". A loopback, link-local or metadata host is allowed
    /// only by an entry naming it (not by "*"); that rule also covers redirects and token services, and the address
    /// a name resolves to. (An array, so configuring it replaces the default.)
    /// </summary>
    public string[] AllowedRegistries { get; set; } = [Oci.Registry.RegistryPolicy.AnyPublicHost];

    public Oci.Registry.RegistryPolicy RegistryPolicy() => new(AllowedRegistries, "BatchRunner:AllowedRegistries");

    /// <summary>
    /// Reads the section into options. ConfigurationBinder appends the items configured for an array to the items
    /// of its default (configuring AllowedNetworkModes ["none"] would give none, bridge, none): every array with a
    /// default is read again here so that a configured list replaces it, as the settings' documentation says.
    /// </summary>
    public static BatchRunnerOptions From(IConfiguration configuration)
    {
        var section = configuration.GetSection(Section);
        var options = section.Get<BatchRunnerOptions>() ?? new BatchRunnerOptions();
        string[]? Configured(string key) => section.GetSection(key).GetChildren().Any() ? section.GetSection(key).Get<string[]>() : null;
        options.Queues = Configured("Queues") ?? options.Queues;
        options.AllowedRegistries = Configured("AllowedRegistries") ?? options.AllowedRegistries;
        options.Isolation.AllowedNetworkModes = Configured("Isolation:AllowedNetworkModes") ?? options.Isolation.AllowedNetworkModes;
        options.Isolation.AllowedCapabilities = Configured("Isolation:AllowedCapabilities") ?? options.Isolation.AllowedCapabilities;
        return options;
    }

    /// <summary>
    /// <see cref="From"/> and <see cref="Validate"/>: the settings, or a <see cref="StartupRefusedException"/> that names the
    /// setting at fault, for a value the binder cannot convert ("BatchRunner:Workers" of "four") as for one out of range.
    /// </summary>
    public static BatchRunnerOptions ReadValid(IConfiguration configuration)
    {
        try
        {
            var options = From(configuration);
            options.Validate();
            return options;
        }
        catch (InvalidOperationException e) when (e is not StartupRefusedException)
        {
            // The binder's own message names the value, the key and the type: "Failed to convert configuration value
            // 'four' at 'BatchRunner:Workers' to type 'System.Int32'."
            throw new StartupRefusedException($"invalid setting: {e.Message}", e);
        }
    }

    /// <summary>Capacity:Memory in bytes; null when not set (the machine's memory less a reserve).</summary>
    public long? CapacityMemoryBytes() =>
        string.IsNullOrWhiteSpace(Capacity.Memory) ? null
        : Core.Quantity.TryParseBytes(Capacity.Memory, out var memory) && memory > 0 ? memory
        : throw new InvalidOperationException($"BatchRunner:Capacity:Memory \"{Capacity.Memory}\" is not a quantity of memory such as 8Gi");

    public bool RunsApi => Role is "all" or "api";
    public bool RunsWorker => Role is "all" or "worker";

    public static string DefaultDataDir() =>
        Environment.UserName == "root" || Environment.GetEnvironmentVariable("USER") == "root"
            ? "/var/lib/batchrunner"
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.LocalApplicationData), "batchrunner");

    public void Validate()
    {
        if (Role is not ("all" or "api" or "worker"))
            throw new InvalidOperationException($"BatchRunner:Role must be all, api or worker, not \"{Role}\"");
        if (Workers < 1) throw new InvalidOperationException("BatchRunner:Workers must be at least 1");
        if (Capacity.Cpus is { } cpus && !(cpus > 0)) throw new InvalidOperationException("BatchRunner:Capacity:Cpus must be more than 0");
        _ = CapacityMemoryBytes();
        Workers ??= DefaultWorkers(Capacity.Cpus ?? Environment.ProcessorCount);
        if (Queues.Length == 0) throw new InvalidOperationException("BatchRunner:Queues must name at least one queue");
        // A queue has one Hangfire queue per tenant, QUEUE--TENANT (Storage/JobQueue.PhysicalQueue): "--" would make two alike.
        foreach (var q in Queues)
            if (!System.Text.RegularExpressions.Regex.IsMatch(q, "^[a-z0-9][a-z0-9_-]{0,62}$") || q.Contains("--", StringComparison.Ordinal))
                throw new InvalidOperationException($"BatchRunner:Queues: \"{q}\" must be 1-63 lowercase letters, digits, '_' and '-', start with a letter or digit, and not contain \"--\"");
        _ = ImageCacheBudgetBytes();
        _ = MaxLogBytesValue();
        if (HeartbeatSeconds < 1) throw new InvalidOperationException("BatchRunner:HeartbeatSeconds must be at least 1");
        if (ShutdownGraceSeconds < 0) throw new InvalidOperationException("BatchRunner:ShutdownGraceSeconds must not be negative");
        if (MaxStopGraceSeconds is < 0 or > Core.JobDefaults.MaxStopGraceSeconds)
            throw new InvalidOperationException($"BatchRunner:MaxStopGraceSeconds must be between 0 and {Core.JobDefaults.MaxStopGraceSeconds}");
        if (StopGraceSeconds < 0 || StopGraceSeconds > MaxStopGraceSeconds)
            throw new InvalidOperationException($"BatchRunner:StopGraceSeconds must be between 0 and MaxStopGraceSeconds ({MaxStopGraceSeconds})");
        foreach (var p in AllowedRegistries)
            if (Oci.Registry.RegistryPolicy.Validate(p) is { } error) throw new InvalidOperationException($"BatchRunner:AllowedRegistries: {error}");
        Isolation.Validate();
        Retention.Validate();
        Auth.Validate();
        if (SecretsKey is { Length: > 0 and < Storage.KeyRingKey.MinLength })
            throw new InvalidOperationException($"BatchRunner:SecretsKey must be at least {Storage.KeyRingKey.MinLength} characters");
        Webhooks.Validate();
        if (ReconcileSeconds is <= 0 or > 3600) throw new InvalidOperationException("BatchRunner:ReconcileSeconds must be between 0 and 3600");
        Disk.Validate();
        _ = MinFreeDiskBytes();
        if (!Path.IsPathRooted(DataDir)) DataDir = Path.GetFullPath(DataDir);
    }
}

public sealed class CapacityOptions
{
    public double? Cpus { get; set; }
    /// <summary>A quantity ("8Gi") or bytes.</summary>
    public string? Memory { get; set; }
}

public sealed class RegistryCredentialOptions
{
    public string Registry { get; set; } = "";
    public string? Username { get; set; }
    public string? Password { get; set; }
    public string? IdentityToken { get; set; }
}

/// <summary>Short environment variable names for the settings people set most.</summary>
public static class EnvironmentShortcuts
{
    public static readonly IReadOnlyDictionary<string, string> Map = new Dictionary<string, string>
    {
        ["BATCHRUNNER_DATA_DIR"] = "BatchRunner:DataDir",
        ["BATCHRUNNER_API_KEY"] = "BatchRunner:ApiKey",
        ["BATCHRUNNER_CONNECTION_STRING"] = "BatchRunner:ConnectionString",
        ["BATCHRUNNER_ROLE"] = "BatchRunner:Role",
        ["BATCHRUNNER_WORKERS"] = "BatchRunner:Workers",
        ["BATCHRUNNER_NODE_NAME"] = "BatchRunner:NodeName",
        ["BATCHRUNNER_CPUS"] = "BatchRunner:Capacity:Cpus",
        ["BATCHRUNNER_MEMORY"] = "BatchRunner:Capacity:Memory",
        ["BATCHRUNNER_SHUTDOWN_GRACE_SECONDS"] = "BatchRunner:ShutdownGraceSeconds",
        ["BATCHRUNNER_STOP_GRACE_SECONDS"] = "BatchRunner:StopGraceSeconds",
        ["BATCHRUNNER_MAX_STOP_GRACE_SECONDS"] = "BatchRunner:MaxStopGraceSeconds",
        ["BATCHRUNNER_IMAGE_CACHE_BUDGET"] = "BatchRunner:ImageCacheBudget",
        ["BATCHRUNNER_MAX_LOG_BYTES"] = "BatchRunner:MaxLogBytes",
        ["BATCHRUNNER_RUNTIME"] = "BatchRunner:Runtime",
        ["BATCHRUNNER_DOCKER_CONFIG"] = "BatchRunner:DockerConfigPath",
        ["BATCHRUNNER_URLS"] = "urls",
        ["BATCHRUNNER_ADVERTISE_URL"] = "BatchRunner:AdvertiseUrl",
        ["BATCHRUNNER_WEBHOOK_SECRET"] = "BatchRunner:Webhooks:Secret",
        ["BATCHRUNNER_SECRETS_KEY"] = "BatchRunner:SecretsKey",
        ["BATCHRUNNER_MIN_FREE_DISK"] = "BatchRunner:MinFreeDisk",
        ["BATCHRUNNER_DISK_DEFAULT"] = "BatchRunner:Disk:Default",
        ["BATCHRUNNER_DISK_MAX"] = "BatchRunner:Disk:Max",
        ["BATCHRUNNER_DISK_ENFORCE"] = "BatchRunner:Disk:Enforce",
        ["BATCHRUNNER_DISK_POOLSIZE"] = "BatchRunner:Disk:PoolSize",
    };

    public static IEnumerable<KeyValuePair<string, string?>> Read()
    {
        foreach (var (env, key) in Map)
            if (Environment.GetEnvironmentVariable(env) is { Length: > 0 } v)
                yield return new(key, v);
    }
}
