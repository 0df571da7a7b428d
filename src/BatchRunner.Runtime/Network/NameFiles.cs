using System.Net;

namespace BatchRunner.Runtime.Network;

/// <summary>
/// The three files through which a container finds names, as Docker provides them: /etc/hostname and
/// /etc/hosts for every container (its hostname resolves to its own address: the bridge address, else
/// 127.0.1.1), and /etc/resolv.conf where it has a network to ask (host and bridge modes). A bridge
/// container cannot reach the host's loopback, so loopback nameservers (systemd-resolved's 127.0.0.53,
/// a local dnsmasq) are dropped there; systemd-resolved's upstream list is used instead when the host's
/// file names only the stub. Pure text: the runtime writes and binds the files.
/// </summary>
public static class NameFiles
{
    public const string ResolvedUpstream = "/run/systemd/resolve/resolv.conf";

    public static string Hostname(string hostname) => hostname + "\n";

    /// <summary>/etc/hosts: localhost entries, then the hostname at the container's own address. In host
    /// mode the host's entries (<paramref name="hostHosts"/>) come first, as the container shares its network.</summary>
    public static string Hosts(string hostname, string? address, string? hostHosts = null)
    {
        var own = address is null ? "127.0.1.1" : address.Split('/')[0];
        var lines = new List<string>();
        if (hostHosts is not null) lines.AddRange(hostHosts.TrimEnd('\n').Split('\n'));
        else
        {
            lines.Add("127.0.0.1\tlocalhost");
            lines.Add("::1\tlocalhost ip6-localhost ip6-loopback");
        }
        lines.Add($"{own}\t{hostname}");
        return string.Join('\n', lines) + "\n";
    }

    /// <summary>
    /// /etc/resolv.conf for a container in <paramref name="mode"/> (null for <see cref="ContainerNetworkMode.None"/>:
    /// the image's own file stays). <paramref name="configuredServers"/> (the node's setting) replaces the
    /// host's nameservers; search and options lines are kept either way.
    /// </summary>
    public static string? ResolvConf(ContainerNetworkMode mode, string hostResolvConf, string? resolvedUpstream, IReadOnlyList<string>? configuredServers, out string? warning)
    {
        warning = null;
        if (mode == ContainerNetworkMode.None) return null;
        var lines = hostResolvConf.Split('\n').Select(l => l.TrimEnd('\r')).ToList();
        var others = lines.Where(l => !IsNameserver(l, out _) && l.Trim().Length > 0 && !l.TrimStart().StartsWith('#') && !l.TrimStart().StartsWith(';')).ToList();
        var servers = mode == ContainerNetworkMode.Bridge
            ? BridgeNameservers(hostResolvConf, resolvedUpstream, configuredServers, out warning)
            : configuredServers is { Count: > 0 } ? [.. configuredServers] : Nameservers(lines);
        return string.Join('\n', servers.Select(s => "nameserver " + s).Concat(others)) + "\n";
    }

    /// <summary>The nameservers of a bridge container: <paramref name="configuredServers"/> when given, else the
    /// host's less loopback ones (systemd-resolved's upstream servers in place of its stub).</summary>
    public static List<string> BridgeNameservers(string hostResolvConf, string? resolvedUpstream, IReadOnlyList<string>? configuredServers, out string? warning)
    {
        warning = null;
        if (configuredServers is { Count: > 0 }) return [.. configuredServers];
        var servers = Nameservers(hostResolvConf.Split('\n'));
        var reachable = servers.Where(s => !IsLoopback(s)).ToList();
        if (reachable.Count == 0 && servers.Count > 0 && resolvedUpstream is not null)
            reachable = Nameservers(resolvedUpstream.Split('\n')).Where(s => !IsLoopback(s)).ToList();
        if (reachable.Count == 0 && servers.Count > 0)
            warning = $"the host's nameservers ({string.Join(", ", servers)}) are all loopback addresses, which a bridge container cannot reach: set BatchRunner:Isolation:Bridge:DnsServers";
        return reachable;
    }

    private static List<string> Nameservers(IEnumerable<string> lines) =>
        lines.Select(l => IsNameserver(l, out var s) ? s : null).OfType<string>().ToList();

    private static bool IsNameserver(string line, out string server)
    {
        var parts = line.Split([' ', '\t', '\r'], StringSplitOptions.RemoveEmptyEntries);
        server = parts.Length >= 2 && parts[0] == "nameserver" ? parts[1] : "";
        return server.Length > 0;
    }

    private static bool IsLoopback(string server)
    {
        var addr = server.Split('%')[0]; // a scoped IPv6 address: fe80::1%eth0
        return IPAddress.TryParse(addr, out var ip) && IPAddress.IsLoopback(ip);
    }
}
