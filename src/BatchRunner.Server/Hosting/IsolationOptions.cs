using BatchRunner.Core;

namespace BatchRunner.Server.Hosting;

/// <summary>
/// Configuration section "BatchRunner:Isolation": what jobs on this node may ask for (network modes,
/// capabilities, datasets), the bridge network, user-namespace remapping and input limits. The API
/// checks submissions against it; the worker's runtime enforces it again at start.
/// (Lists are arrays, so configuring one replaces the default instead of appending to it.)
/// </summary>
public sealed class IsolationOptions
{
    /// <summary>Network modes jobs may use; default none and bridge. "host" must be named explicitly.</summary>
    public string[] AllowedNetworkModes { get; set; } = [NetworkModes.None, NetworkModes.Bridge];

    /// <summary>Capabilities jobs may request; default <see cref="LinuxCapabilities.DefaultAllowed"/>.</summary>
    public string[] AllowedCapabilities { get; set; } = [.. LinuxCapabilities.DefaultAllowed];

    /// <summary>Datasets: name → host directory, mounted read-only where a job's volumes name them.</summary>
    public Dictionary<string, string> Datasets { get; set; } = [];

    public BridgeOptions Bridge { get; set; } = new();

    public UserNamespaceSettings UserNamespace { get; set; } = new();

    /// <summary>Most bytes of input files (after unpacking archives) one job may bring.</summary>
    public long MaxInputBytes { get; set; } = 1L << 30;

    /// <summary>Most files, directories and links one job's inputs may hold.</summary>
    public int MaxInputEntries { get; set; } = 10_000;

    public IReadOnlyList<string> NormalizedCapabilities => AllowedCapabilities.Select(LinuxCapabilities.Normalize).ToList();

    public void Validate()
    {
        foreach (var m in AllowedNetworkModes)
            if (!NetworkModes.All.Contains(m))
                throw new InvalidOperationException($"BatchRunner:Isolation:AllowedNetworkModes: unknown mode \"{m}\" (one of {string.Join(", ", NetworkModes.All)})");
        foreach (var c in AllowedCapabilities)
            if (!LinuxCapabilities.All.Contains(LinuxCapabilities.Normalize(c)))
                throw new InvalidOperationException($"BatchRunner:Isolation:AllowedCapabilities: unknown capability \"{c}\"");
        foreach (var (name, dir) in Datasets)
            if (!Path.IsPathFullyQualified(dir))
                throw new InvalidOperationException($"BatchRunner:Isolation:Datasets:{name}: \"{dir}\" must be an absolute host path");
        foreach (var d in Bridge.DnsServers)
            if (!System.Net.IPAddress.TryParse(d, out _))
                throw new InvalidOperationException($"BatchRunner:Isolation:Bridge:DnsServers: \"{d}\" is not an IP address");
        if (Bridge.Name.Length is 0 or > 15) throw new InvalidOperationException("BatchRunner:Isolation:Bridge:Name must be 1-15 characters (a Linux interface name)");
        if (UserNamespace.Enabled && (UserNamespace.HostUidStart == 0 || UserNamespace.HostGidStart == 0 || UserNamespace.Size < 1))
            throw new InvalidOperationException("BatchRunner:Isolation:UserNamespace needs HostUidStart, HostGidStart > 0 and Size ≥ 1");
        if (MaxInputBytes < 1 || MaxInputEntries < 1) throw new InvalidOperationException("BatchRunner:Isolation: MaxInputBytes and MaxInputEntries must be positive");
    }
}

/// <summary>The node's bridge for network mode "bridge" (CNI bridge + host-local + firewall plugins).</summary>
public sealed class BridgeOptions
{
    public string Name { get; set; } = "br-batchrunner";
    /// <summary>CNI network name (names the address store and NAT chain comments).</summary>
    public string Network { get; set; } = "batchrunner";
    public string Subnet { get; set; } = "10.88.0.0/16";
    /// <summary>True (default): bridge jobs cannot reach each other, only the gateway and (NAT) the outside.</summary>
    public bool IsolateJobs { get; set; } = true;
    public bool IpMasq { get; set; } = true;
    /// <summary>Nameservers written to bridge jobs' /etc/resolv.conf; empty: the host's, without loopback
    /// ones (with systemd-resolved's upstream servers in place of its 127.0.0.53 stub).</summary>
    public string[] DnsServers { get; set; } = [];
    /// <summary>False (default): bridge jobs cannot reach this host's addresses (the API, /metrics, a registry on
    /// the host, any interface, the gateway included) nor 169.254.0.0/16, except port 53 of a nameserver they use;
    /// iptables rules of BatchRunner's own enforce it. True: no rules, jobs reach what the host serves.</summary>
    public bool AllowHostAccess { get; set; }
    public string PluginDir { get; set; } = "/usr/lib/cni";
    /// <summary>Address leases and cached CNI results (default /run/batchrunner/cni/NETWORK).</summary>
    public string? StateDir { get; set; }
}

/// <summary>Remaps every job's ids into an unprivileged host range (container root = host HostUidStart).</summary>
public sealed class UserNamespaceSettings
{
    public bool Enabled { get; set; }
    public uint HostUidStart { get; set; } = 100_000;
    public uint HostGidStart { get; set; } = 100_000;
    public uint Size { get; set; } = 65_536;
}
