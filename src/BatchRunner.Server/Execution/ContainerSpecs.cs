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

    public static ContainerSpec For(string containerId, JobSpec spec, ImageConfig image, string rootfs, string outputsDir)
    {
        var args = Args(spec, image);
        var user = UserResolver.Resolve(rootfs, spec.User ?? image.User);
        return new ContainerSpec
        {
            Id = containerId,
            RootfsPath = rootfs,
            Args = args,
            Env = Env(spec, image),
            Cwd = spec.WorkingDir ?? (string.IsNullOrEmpty(image.WorkingDir) ? "/" : image.WorkingDir),
            Uid = user.Uid,
            Gid = user.Gid,
            AdditionalGids = user.AdditionalGids,
            Cpus = spec.Resources.Cpus,
            MemoryLimitBytes = spec.Resources.MemoryBytes,
            PidsLimit = spec.Resources.Pids,
            Mounts = [new BindMount(outputsDir, "/outputs", ReadOnly: false)],
        };
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

    public static IReadOnlyList<string> Env(JobSpec spec, ImageConfig image)
    {
        var env = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var kv in image.Env)
        {
            var eq = kv.IndexOf('=');
            if (eq > 0) env[kv[..eq]] = kv[(eq + 1)..];
        }
        env.TryAdd("PATH", DefaultPath);
        foreach (var (k, v) in spec.Env) env[k] = v;
        env.TryAdd("HOME", "/");
        return env.Select(kv => $"{kv.Key}={kv.Value}").ToList();
    }
}
