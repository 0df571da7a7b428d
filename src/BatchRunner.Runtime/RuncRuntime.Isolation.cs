using BatchRunner.Runtime.Network;
using BatchRunner.Runtime.Spec;
using BatchRunner.Native;

namespace BatchRunner.Runtime;

public sealed partial record RuncRuntimeOptions
{
    /// <summary>Whether containers may share the host's network namespace (<see cref="ContainerNetworkMode.Host"/>).
    /// Off by default: a job on the host network reaches every service bound to the host's loopback.</summary>
    public bool AllowHostNetwork { get; init; }

    /// <summary>The bridge network; null: <see cref="ContainerNetworkMode.Bridge"/> is refused.</summary>
    public BridgeNetworkOptions? Bridge { get; init; }

    /// <summary>Capabilities a container may be given; null: any (the caller is trusted to have checked).</summary>
    public IReadOnlyList<string>? AllowedCapabilities { get; init; }

    /// <summary>Remap every container's ids into this unprivileged host range; null: no user namespace.</summary>
    public UserNamespaceOptions? UserNamespace { get; init; }

    /// <summary>The host's resolver configuration, the source of host and bridge containers' /etc/resolv.conf.</summary>
    public string HostResolvConf { get; init; } = "/etc/resolv.conf";
    /// <summary>The host's /etc/hosts, the start of host-network containers' /etc/hosts.</summary>
    public string HostHosts { get; init; } = "/etc/hosts";
}

/// <summary>
/// Container ids 0..Size-1 are host ids HostUidStart.. (HostGidStart.. for groups): the container's root
/// is an unprivileged host user. The range should be one no host account uses (as /etc/subuid ranges are).
/// </summary>
public sealed record UserNamespaceOptions(uint HostUidStart, uint HostGidStart, uint Size = 65536);

public sealed partial class RuncRuntime
{
    private CniBridgeNetwork? _bridge;

    internal CniBridgeNetwork? BridgeNetwork =>
        _options.Bridge is null ? null : _bridge ??= new CniBridgeNetwork(_options.Bridge, _logger);

    /// <summary>
    /// Checks <paramref name="spec"/> against what this runtime allows and creates what the container
    /// needs before it starts: its bridge network namespace, the ownership a user namespace needs.
    /// Returns the spec options that point at them; the caller owns the returned attachment.
    /// </summary>
    private async Task<(List<SpecOpt> Options, NetworkAttachment? Network)> PrepareIsolationAsync(ContainerSpec spec, CancellationToken ct)
    {
        if (spec.Network == ContainerNetworkMode.Host && !_options.AllowHostNetwork)
            throw new ContainerStartException($"container {spec.Id}: host network is not allowed on this node");
        if (_options.AllowedCapabilities is { } allowed && spec.Capabilities.FirstOrDefault(c => !allowed.Contains(c)) is { } denied)
            throw new ContainerStartException($"container {spec.Id}: capability {denied} is not allowed on this node");

        var opts = new List<SpecOpt>();
        if (_options.UserNamespace is { } userns)
        {
            if (spec.Uid >= userns.Size || spec.Gid >= userns.Size)
                throw new ContainerStartException($"container {spec.Id}: user {spec.Uid}:{spec.Gid} lies outside the node's user namespace of {userns.Size} ids");
            // An image's /etc/group may add the user to any group; runc would only say "setgroups: invalid argument".
            if (spec.AdditionalGids.Where(g => g >= userns.Size).Select(g => (uint?)g).FirstOrDefault() is { } group)
                throw new ContainerStartException($"container {spec.Id}: supplementary group {group} of user {spec.Uid} lies outside the node's user namespace of {userns.Size} ids");
            // runc mounts the rootfs from inside the new user namespace, as the mapped root: a directory above
            // it that this host user may not search fails the start with a bare "permission denied".
            if (HostFiles.FirstUnsearchableAncestor(spec.RootfsPath, userns.HostUidStart, userns.HostGidStart) is { } blocked)
                throw new ContainerStartException($"container {spec.Id}: the user namespace's root (host uid {userns.HostUidStart}) cannot reach the rootfs: " +
                    $"{blocked.Dir} (mode {Convert.ToString(blocked.Mode, 8)}, owner {blocked.Uid}:{blocked.Gid}) is not searchable by it; run chmod o+x {blocked.Dir} or move the data directory");
            opts.Add(SpecOpts.WithUserNamespace(userns.HostUidStart, userns.HostGidStart, userns.Size));
            // The mapped root must own the root directory (an overlay copies it up: the image is unchanged),
            // and the job's mapped user its writable mounts.
            Chown(spec.RootfsPath, userns.HostUidStart, userns.HostGidStart);
            foreach (var m in spec.Mounts.Where(m => !m.ReadOnly))
                Chown(m.Source, userns.HostUidStart + spec.Uid, userns.HostGidStart + spec.Gid);
        }

        NetworkAttachment? network = null;
        if (spec.Network == ContainerNetworkMode.Bridge)
        {
            var bridge = BridgeNetwork ?? throw new ContainerStartException($"container {spec.Id}: bridge network is not configured on this node");
            // The same servers WriteNameFiles puts in resolv.conf: the bridge's host rules keep their port 53 open.
            var nameservers = NameFiles.BridgeNameservers(ReadOrNull(_options.HostResolvConf) ?? "", ReadOrNull(NameFiles.ResolvedUpstream),
                _options.Bridge?.DnsServers, out _);
            network = await bridge.AttachAsync(spec.Id, nameservers, ct);
            opts.Add(SpecOpts.WithNetworkNamespacePath(network.NetnsPath));
        }
        // sysfs can only be mounted by a user namespace that owns the network namespace; the bridge's
        // (made before the container) and the host's are not owned by the container's: bind the host's
        // /sys read-only instead (as rootless engines do).
        if (_options.UserNamespace is not null && spec.Network is ContainerNetworkMode.Bridge or ContainerNetworkMode.Host)
            opts.Add(BindHostSys);
        return (opts, network);
    }

    /// <summary>Turns the /sys mount into a read-only bind of the host's, in place: mounts below it
    /// (/sys/fs/cgroup) must still come after it.</summary>
    private static void BindHostSys(RuntimeSpec s)
    {
        foreach (var m in s.Mounts?.Where(m => m.Destination == "/sys") ?? [])
        {
            m.Type = "bind";
            m.Source = "/sys";
            m.Options = ["rbind", "ro", "nosuid", "noexec", "nodev"];
        }
    }

    internal const string HostnameFile = "hostname", HostsFile = "hosts", ResolvConfFile = "resolv.conf";

    /// <summary>
    /// Writes the container's /etc/hostname, /etc/hosts and (host and bridge modes) /etc/resolv.conf into
    /// <paramref name="dir"/> (<see cref="ContainerSpec.NameFilesDir"/> or the bundle) and returns the option that binds
    /// them (per-container copies: a job may edit them).
    /// </summary>
    private SpecOpt WriteNameFiles(ContainerSpec spec, string dir, NetworkAttachment? network)
    {
        Directory.CreateDirectory(dir);
        var host = spec.Network == ContainerNetworkMode.Host;
        var files = new List<(string Name, string Destination, string Text)>
        {
            (HostnameFile, "/etc/hostname", NameFiles.Hostname(spec.Hostname)),
            (HostsFile, "/etc/hosts", NameFiles.Hosts(spec.Hostname, network?.Address, host ? ReadOrNull(_options.HostHosts) : null)),
        };
        if (spec.Network != ContainerNetworkMode.None)
        {
            var resolv = NameFiles.ResolvConf(spec.Network, ReadOrNull(_options.HostResolvConf) ?? "", ReadOrNull(NameFiles.ResolvedUpstream),
                _options.Bridge?.DnsServers, out var warning);
            if (warning is not null) _logger.NameResolutionWarning(spec.Id, warning);
            if (resolv is not null) files.Add((ResolvConfFile, "/etc/resolv.conf", resolv));
        }
        // In a user namespace the runtime creates missing mount points as the mapped root, which cannot
        // write the image's root-owned /etc: create them here, confined to the rootfs. Where that is
        // impossible (the image has a directory at /etc/hosts, say), the image's own file stays.
        if (_options.UserNamespace is not null)
            files.RemoveAll(f => !Libc.EnsureFileInRoot(spec.RootfsPath, f.Destination.TrimStart('/')));
        foreach (var f in files) File.WriteAllText(Path.Combine(dir, f.Name), f.Text);
        return SpecOpts.WithBindMounts(files.Select(f => new BindMount(Path.Combine(dir, f.Name), f.Destination, ReadOnly: false)));
    }

    private static string? ReadOrNull(string path)
    {
        try { return File.ReadAllText(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
    }

    private async Task ReleaseNetworkAsync(NetworkAttachment? network)
    {
        if (network is null || BridgeNetwork is not { } bridge) return;
        await bridge.DetachAsync(network.ContainerId, CancellationToken.None);
    }

    private static void Chown(string path, uint uid, uint gid)
    {
        if (Libc.chown(path, uid, gid) != 0)
            throw new ContainerStartException($"chown {path} to {uid}:{gid} for the user namespace failed (errno {Libc.Errno})");
    }
}
