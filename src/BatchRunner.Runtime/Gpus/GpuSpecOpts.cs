using System.Runtime.InteropServices;
using System.Text.RegularExpressions;
using BatchRunner.Runtime.Spec;
using BatchRunner.Native;

namespace BatchRunner.Runtime.Gpus;

/// <summary>How GPUs are injected; the defaults suit NVIDIA's driver.</summary>
public sealed record GpuInjectionOptions
{
    /// <summary>
    /// Host ldconfig run as a createContainer hook (`ldconfig -r ROOTFS DIR…`) so the image's ld.so.cache
    /// lists the bound driver libraries. Null: no ld.so.cache update. Skipped when a CDI spec brings its own
    /// update-ldcache hook. See <see cref="GpuSpecOpts.WithGpus"/> for why this and not the image's ldconfig.
    /// </summary>
    public string? LdconfigPath { get; init; } = "/sbin/ldconfig";

    /// <summary>
    /// Rename the assigned GPUs' /dev/nvidiaN nodes to /dev/nvidia0..N-1 inside the container. Off by default:
    /// NVIDIA's user-space opens /dev/nvidia&lt;minor&gt; by the device's minor number, so a renamed node is not
    /// found (the NVIDIA container toolkit keeps host names too). CUDA numbers the GPUs it can open 0..N-1
    /// regardless, which is what makes them appear as 0..N-1 to the job.
    /// </summary>
    public bool RenumberDeviceNodes { get; init; }

    /// <summary>Mode of device nodes whose edits name none (NVIDIA's nodes are 0666 on the host).</summary>
    public uint DefaultFileMode { get; init; } = 0x1B6; // 0666
}

/// <summary>OCI spec options that give a container GPUs, the way CDI applies container edits.</summary>
public static partial class GpuSpecOpts
{
    public const string NvidiaVisibleDevices = "NVIDIA_VISIBLE_DEVICES";
    public const string CudaVisibleDevices = "CUDA_VISIBLE_DEVICES";

    [GeneratedRegex(@"^/dev/nvidia\d+$")]
    private static partial Regex NvidiaGpuNode();

    /// <summary>
    /// Gives the container exactly <paramref name="assigned"/> plus <paramref name="common"/> (control nodes,
    /// driver libraries and tools, env, hooks). Must run after the default options of
    /// <see cref="SpecBuilder.ForContainer"/> (it relies on their deny-all device rule and on root.path).
    /// <list type="bullet">
    /// <item>Device nodes: linux.devices with type and major:minor from a stat of the host node (so a driver
    /// reload that renumbers is seen at the next container), mode 0666, and one device-cgroup allow rule per
    /// node after the deny-all rule: nothing else can be opened, even via mknod (CAP_MKNOD is dropped too).</item>
    /// <item>Mounts: bind, read-only, nosuid, nodev (CDI's options when a spec gives them).</item>
    /// <item>Env: NVIDIA_VISIBLE_DEVICES = the UUIDs, CUDA_VISIBLE_DEVICES = 0..N-1 (these win over the job's).</item>
    /// <item>Hooks: each CDI hook in the OCI list its hookName names.</item>
    /// <item>ld.so.cache: the image's cache does not know the bound libraries. Running the image's own
    /// ldconfig (as NVIDIA's hook does) would execute an untrusted image binary as root before the container's
    /// privileges are dropped; running the host's `ldconfig -r ROOTFS` only reads the image. It runs as a
    /// createContainer hook because only then are the bind mounts visible under ROOTFS (runc runs those hooks
    /// in the container's mount namespace before pivot_root); it writes ROOTFS/etc/ld.so.cache, i.e. into the
    /// executor's per-attempt overlay upper directory, never into the shared image layers. Skipped for a
    /// rootfs without /etc (a scratch image; libraries are still found by path).</item>
    /// </list>
    /// An empty <paramref name="assigned"/> returns a no-op: a job without GPUs gets no GPU node, mount or env.
    /// </summary>
    public static SpecOpt WithGpus(IReadOnlyList<Gpu> assigned, GpuContainerEdits common, GpuInjectionOptions? options = null)
    {
        if (assigned.Count == 0) return _ => { };
        options ??= new GpuInjectionOptions();
        var edits = GpuContainerEdits.Empty;
        for (var i = 0; i < assigned.Count; i++)
        {
            var gpuEdits = assigned[i].Edits;
            if (options.RenumberDeviceNodes)
            {
                var renamed = i;
                gpuEdits = gpuEdits with
                {
                    DeviceNodes = gpuEdits.DeviceNodes.Select(n => NvidiaGpuNode().IsMatch(n.Path)
                        ? n with { Path = $"/dev/nvidia{renamed}", HostPath = n.EffectiveHostPath } : n).ToList(),
                };
            }
            edits = edits.Merge(gpuEdits);
        }
        edits = common.Merge(edits);
        var env = new List<string>(edits.Env)
        {
            $"{NvidiaVisibleDevices}={string.Join(',', assigned.Select(g => g.Uuid))}",
            $"{CudaVisibleDevices}={string.Join(',', Enumerable.Range(0, assigned.Count))}",
        };
        var uuids = assigned.Select(g => g.Uuid).ToList();
        return spec => Apply(spec, edits, env, options, uuids);
    }

    private static void Apply(RuntimeSpec spec, GpuContainerEdits edits, List<string> env, GpuInjectionOptions options, List<string> uuids)
    {
        var linux = spec.Linux ??= new LinuxSpec();
        var devices = linux.Devices ??= [];
        var rules = (linux.Resources ??= new ResourcesSpec()).Devices ??= [];
        if (!rules.Any(r => !r.Allow && r.Type is null && r.Major is null && r.Minor is null))
            throw new InvalidOperationException("GPU injection needs the deny-all device rule first (SpecOpts.WithDenyAllDevices)");
        foreach (var node in edits.DeviceNodes)
        {
            var (type, major, minor) = HostDevice(node);
            devices.RemoveAll(d => d.Path == node.Path);
            devices.Add(new LinuxDeviceSpec
            {
                Path = node.Path, Type = type, Major = major, Minor = minor,
                FileMode = node.FileMode ?? options.DefaultFileMode, Uid = 0, Gid = 0,
            });
            rules.Add(new DeviceCgroupSpec { Allow = true, Type = type, Major = major, Minor = minor, Access = node.Permissions });
        }

        var mounts = spec.Mounts ??= [];
        foreach (var m in edits.Mounts)
        {
            if (!m.ContainerPath.StartsWith('/')) throw new ArgumentException($"GPU mount target \"{m.ContainerPath}\" must be absolute");
            mounts.RemoveAll(x => x.Destination == m.ContainerPath);
            mounts.Add(new MountSpec { Destination = m.ContainerPath, Type = "bind", Source = m.HostPath, Options = [.. m.Options] });
        }

        var process = spec.Process ??= new ProcessSpec();
        var penv = process.Env ??= [];
        foreach (var e in env)
        {
            var key = e[..(e.IndexOf('=') is var eq and >= 0 ? eq + 1 : e.Length)];
            penv.RemoveAll(x => x.StartsWith(key, StringComparison.Ordinal) || x == key.TrimEnd('='));
            penv.Add(e);
        }

        var hooks = spec.Hooks ??= new HooksSpec();
        foreach (var h in edits.Hooks)
        {
            var list = h.HookName switch
            {
                "prestart" => hooks.Prestart ??= [],
                "createRuntime" => hooks.CreateRuntime ??= [],
                "createContainer" => hooks.CreateContainer ??= [],
                "startContainer" => hooks.StartContainer ??= [],
                "poststart" => hooks.Poststart ??= [],
                "poststop" => hooks.Poststop ??= [],
                _ => throw new ArgumentException($"CDI hook {h.Path}: unknown hookName \"{h.HookName}\""),
            };
            list.Add(new HookSpec { Path = h.Path, Args = h.Args.Count > 0 ? [.. h.Args] : null, Env = h.Env.Count > 0 ? [.. h.Env] : null, Timeout = h.TimeoutSeconds });
        }

        var libDirs = edits.Mounts.Where(m => Path.GetFileName(m.ContainerPath).Contains(".so", StringComparison.Ordinal))
            .Select(m => Path.GetDirectoryName(m.ContainerPath)!).Distinct(StringComparer.Ordinal).ToList();
        var cdiUpdatesCache = edits.Hooks.Any(h => h.Args.Contains("update-ldcache"));
        if (options.LdconfigPath is { } ldconfig && libDirs.Count > 0 && !cdiUpdatesCache)
        {
            var rootfs = spec.Root?.Path ?? throw new InvalidOperationException("GPU injection needs root.path (SpecOpts.WithRootfs) to update the rootfs's ld.so.cache");
            (hooks.CreateContainer ??= []).Add(new HookSpec
            {
                Path = "/bin/sh",
                // $0 = ldconfig, $1 = rootfs, then the library directories (inside the rootfs).
                Args = ["sh", "-c", "root=$1; [ -d \"$root/etc\" ] || exit 0; exec \"$0\" -r \"$@\"", ldconfig, rootfs, .. libDirs],
                Timeout = 30,
            });
        }

        (spec.Annotations ??= [])["io.batchrunner.gpus"] = string.Join(',', uuids);
    }

    /// <summary>Type and numbers of the host node (stat), else those the edits name; a node with neither is an error.</summary>
    private static (string Type, long Major, long Minor) HostDevice(GpuDeviceNode node)
    {
        var host = node.EffectiveHostPath;
        if (Libc.TryStat(Libc.AT_FDCWD, host, out var st, followTrailingSymlink: true) && st.DeviceType is { } type)
            return (node.Type ?? type, st.RdevMajor, st.RdevMinor);
        if (node.Major is { } ma && node.Minor is { } mi)
            return (node.Type ?? "c", ma, mi);
        throw new InvalidOperationException($"GPU device node {host} does not exist or is not a device, and its edits give no major:minor");
    }
}
