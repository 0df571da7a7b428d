using BatchRunner.Core;
using BatchRunner.Oci;
using BatchRunner.Runtime;

namespace BatchRunner.Server.Execution;

/// <summary>
/// Maps a job spec and its image's config onto a runtime <see cref="ContainerSpec"/>, the way Docker
/// combines them: <c>command</c> replaces entrypoint+cmd, <c>args</c> replaces cmd, job env overrides
/// image env, job user/workingDir override the image's.
/// </summary>
public static class ContainerSpecs
{
    public const string DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

    /// <param name="inputsDir">The job's uploaded inputs, mounted read-only at /inputs when the directory exists.</param>
    /// <param name="datasets">The worker's datasets (name → host dir); a volume naming another one is an <see cref="ArgumentException"/>.</param>
    /// <param name="extraEnv">Set by BatchRunner over the job's own env (<see cref="BatchRunnerEnv"/>).</param>
    public static ContainerSpec For(string containerId, JobSpec spec, ImageConfig image, string rootfs, string outputsDir,
        string? inputsDir = null, IReadOnlyDictionary<string, string>? datasets = null, IReadOnlyDictionary<string, string>? extraEnv = null)
    {
        var args = Args(spec, image);
        var user = UserResolver.Resolve(rootfs, spec.User ?? image.User);
        return new ContainerSpec
        {
            Id = containerId,
            RootfsPath = rootfs,
            Args = args,
            Env = Env(spec, image, extraEnv),
            Cwd = spec.WorkingDir ?? (string.IsNullOrEmpty(image.WorkingDir) ? "/" : image.WorkingDir),
            Uid = user.Uid,
            Gid = user.Gid,
            AdditionalGids = user.AdditionalGids,
            Cpus = spec.Resources.Cpus,
            MemoryLimitBytes = spec.Resources.MemoryBytes,
            PidsLimit = spec.Resources.Pids,
            Mounts = Mounts(spec, outputsDir, inputsDir, datasets),
            ReadonlyRootfs = spec.RootfsReadonly,
            Capabilities = spec.Capabilities,
            Rlimits = spec.Ulimits.ToDictionary(u => Ulimits.RlimitName(u.Key), u => (ulong)u.Value),
            ShmSizeBytes = spec.ShmSizeBytes,
            CpuShares = spec.Resources.CpuShares is { } shares ? (ulong)shares : null,
            Cpuset = spec.Resources.Cpuset,
            Network = spec.Network switch
            {
                NetworkModes.Host => ContainerNetworkMode.Host,
                NetworkModes.Bridge => ContainerNetworkMode.Bridge,
                _ => ContainerNetworkMode.None,
            },
        };
    }

    /// <summary>/outputs (rw), /inputs (ro, when there are inputs) and the datasets (ro). Every bind is
    /// nosuid and nodev (<see cref="BindMount"/>).</summary>
    public static IReadOnlyList<BindMount> Mounts(JobSpec spec, string outputsDir, string? inputsDir, IReadOnlyDictionary<string, string>? datasets)
    {
        var mounts = new List<BindMount> { new(outputsDir, "/outputs", ReadOnly: false) };
        if (inputsDir is not null && Directory.Exists(inputsDir)) mounts.Add(new BindMount(inputsDir, "/inputs", ReadOnly: true));
        foreach (var v in spec.Volumes)
        {
            if (datasets is null || !datasets.TryGetValue(v.Dataset, out var hostDir))
                throw new ArgumentException($"dataset \"{v.Dataset}\" is not configured on this node" +
                    (datasets is { Count: > 0 } ? $" (configured: {string.Join(", ", datasets.Keys.Order())})" : " (it has none)"));
            if (!Directory.Exists(hostDir))
                throw new ArgumentException($"dataset \"{v.Dataset}\" is configured as {hostDir}, which does not exist on this node");
            mounts.Add(new BindMount(hostDir, v.Path, ReadOnly: true));
        }
        return mounts;
    }

    public static IReadOnlyList<string> Args(JobSpec spec, ImageConfig image)
    {
        List<string> args = spec.Command is { Count: > 0 } cmd
            ? [.. cmd, .. spec.Args ?? []]
            : [.. image.Entrypoint ?? [], .. spec.Args ?? image.Cmd ?? []];
        if (args.Count == 0)
            throw new ArgumentException("nothing to run: the job has no command and the image has no entrypoint or cmd");
        return args;
    }

    public const string ArrayIndexVariable = "BATCHRUNNER_ARRAY_INDEX";
    public const string ArraySizeVariable = "BATCHRUNNER_ARRAY_SIZE";
    public const string AttemptVariable = "BATCHRUNNER_ATTEMPT";

    /// <summary>What BatchRunner tells every job about itself: <c>BATCHRUNNER_ATTEMPT</c> (1 for the first run, 2 for its
    /// first retry, ...; nothing else carries over between attempts: each has a disk of its own), and an array child's
    /// <c>BATCHRUNNER_ARRAY_INDEX</c> (0..size-1) and <c>BATCHRUNNER_ARRAY_SIZE</c>.</summary>
    public static IReadOnlyDictionary<string, string> BatchRunnerEnv(int attempt, int? index, ArraySpec? array)
    {
        var env = new Dictionary<string, string> { [AttemptVariable] = attempt.ToString(System.Globalization.CultureInfo.InvariantCulture) };
        if (index is { } i && array is { } a)
        {
            env[ArrayIndexVariable] = i.ToString(System.Globalization.CultureInfo.InvariantCulture);
            env[ArraySizeVariable] = a.Size.ToString(System.Globalization.CultureInfo.InvariantCulture);
        }
        return env;
    }

    public static IReadOnlyList<string> Env(JobSpec spec, ImageConfig image, IReadOnlyDictionary<string, string>? extraEnv = null)
    {
        var env = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var kv in image.Env)
        {
            var eq = kv.IndexOf('=');
            if (eq > 0) env[kv[..eq]] = kv[(eq + 1)..];
        }
        env.TryAdd("PATH", DefaultPath);
        foreach (var (k, v) in spec.Env) env[k] = v;
        foreach (var (k, v) in spec.SecretEnv) env[k] = v;
        // BatchRunner's own variables (attempt, an array child's index and size) last: a job cannot give itself another index.
        foreach (var (k, v) in extraEnv ?? new Dictionary<string, string>()) env[k] = v;
        env.TryAdd("HOME", "/");
        return env.Select(kv => $"{kv.Key}={kv.Value}").ToList();
    }
}
