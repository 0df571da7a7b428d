using System.Net;
using System.Net.NetworkInformation;
using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace BatchRunner.Runtime.Network;

/// <summary>
/// The host's firewall rules for one bridge: its containers reach the outside world (through NAT) but neither
/// this host's own addresses (the API, /metrics, a registry or database on the host, on any interface, the
/// bridge's gateway address included) nor link-local addresses (169.254.0.0/16: cloud metadata services).
/// Unless <see cref="BridgeNetworkOptions.AllowHostAccess"/> is set, when there are no rules at all.
/// </summary>
/// <remarks>
/// <para>Rules (iptables, filter table), all in chains of BatchRunner's own, named after the bridge:
/// <c>BRUNNER-HOST-&lt;bridge&gt;</c>, jumped to first in INPUT for packets arriving on the bridge (whatever their
/// source address claims), accepts replies and DNS to a nameserver the containers use that is a host address
/// (UDP and TCP port 53 to exactly that address), and rejects everything else (TCP reset, ICMP port unreachable:
/// connections fail at once instead of hanging). <c>BRUNNER-FWD-&lt;bridge&gt;</c>, jumped to first in FORWARD,
/// rejects 169.254.0.0/16 except port 53 of a link-local nameserver (Google Cloud's resolver is 169.254.169.254).
/// IPv6 (ip6tables): the bridge carries no IPv6 routes, but a container could still reach the host's link-local
/// IPv6 address on the bridge, so INPUT from the bridge is rejected there too.</para>
/// <para>Guarantees: a chain is replaced in one <c>iptables-restore</c> transaction, never empty in between.
/// <see cref="EnsureAsync"/> runs before every container on the bridge starts and costs three rule listings when
/// nothing changed; it puts the rules back when they are missing (a firewall reload) or no longer first (the CNI
/// firewall plugin inserts its own FORWARD jump at the top when that is missing). Idempotent, also across
/// restarts and between processes sharing the bridge (which must share its settings). Nothing is removed at
/// shutdown — jobs of another process may still rely on the rules; <see cref="RemoveAsync"/> (the server's
/// <c>cleanup-network</c> command) removes them for good. Any failure to install fails the container's start:
/// the policy fails closed.</para>
/// </remarks>
public sealed partial class BridgeFirewall(BridgeNetworkOptions options, ILogger? logger = null)
{
    /// <summary>Marks the jump rules as BatchRunner's (one word: rule listings quote comments with spaces).</summary>
    public const string Comment = "batchrunner-bridge-policy";
    private static readonly TimeSpan ToolTimeout = TimeSpan.FromSeconds(30);
    private static readonly string[] ToolDirs = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

    private readonly ILogger _log = logger ?? NullLogger.Instance;
    private readonly SemaphoreSlim _lock = new(1, 1);
    private Plan? _installed;
    private bool _opened;

    /// <summary>INPUT rules of the bridge (at most 28 characters: the bridge name has at most 15).</summary>
    public string HostChain => "BRUNNER-HOST-" + options.BridgeName;
    public string ForwardChain => "BRUNNER-FWD-" + options.BridgeName;

    /// <summary>What a bridge container's nameservers mean for the rules: those that are host addresses and those
    /// that are link-local get port 53 opened, nothing else.</summary>
    public sealed record Plan(IReadOnlyList<IPAddress> HostDnsServers, IReadOnlyList<IPAddress> LinkLocalDnsServers)
    {
        public bool Equals(Plan? other) => other is not null
            && HostDnsServers.SequenceEqual(other.HostDnsServers) && LinkLocalDnsServers.SequenceEqual(other.LinkLocalDnsServers);
        public override int GetHashCode() => HostDnsServers.Count ^ (LinkLocalDnsServers.Count << 8);
    }

    /// <summary>Classifies <paramref name="nameservers"/> (as written in resolv.conf) against this host's addresses.</summary>
    public static Plan PlanFor(IEnumerable<string> nameservers, IEnumerable<IPAddress> hostAddresses)
    {
        var host = hostAddresses.ToHashSet();
        var v4 = nameservers.Select(s => IPAddress.TryParse(s, out var a) ? a : null)
            .OfType<IPAddress>().Where(a => a.AddressFamily == AddressFamily.InterNetwork).Distinct().ToList();
        return new Plan(
            v4.Where(host.Contains).ToList(),
            v4.Where(a => !host.Contains(a) && a.GetAddressBytes() is [169, 254, _, _]).ToList());
    }

    /// <summary>Puts the rules in place (or, with <see cref="BridgeNetworkOptions.AllowHostAccess"/>, removes them)
    /// for containers whose resolv.conf names <paramref name="nameservers"/>.</summary>
    /// <exception cref="ContainerStartException">iptables is missing or refused the rules.</exception>
    public async Task EnsureAsync(IReadOnlyList<string> nameservers, CancellationToken ct)
    {
        await _lock.WaitAsync(ct);
        try
        {
            if (options.AllowHostAccess)
            {
                if (!_opened) await RemoveAsync(ct);
                if (!_opened) LogHostAccessAllowed(_log, options.BridgeName);
                _opened = true;
                return;
            }
            var plan = PlanFor(nameservers, nameservers.Count == 0 ? [] : HostAddresses());
            if (plan.Equals(_installed) && await InPlaceAsync(ct)) return;
            await InstallAsync(plan, ct);
            _installed = plan;
        }
        finally
        {
            _lock.Release();
        }
    }

    /// <summary>Removes BatchRunner's rules and chains of this bridge (both address families). Idempotent.</summary>
    public async Task RemoveAsync(CancellationToken ct)
    {
        foreach (var family in Families())
        {
            if (ToolPath(family.Tool) is null) continue; // no iptables: no rules to remove
            foreach (var (parent, chain) in family.Jumps(this))
            {
                // A jump may be there more than once (two processes inserting at once): delete until none is left.
                for (var i = 0; i < 16 && (await RunAsync(family.Tool, ["-D", parent, .. JumpSpec(chain)], ct)).Ok; i++) { }
                await RunAsync(family.Tool, ["-F", chain], ct);
                await RunAsync(family.Tool, ["-X", chain], ct);
            }
        }
        _installed = null;
    }

    /// <summary>The iptables-restore input that (re)defines this bridge's chains for one family.</summary>
    public string RestoreScript(Plan plan, bool ipv6)
    {
        var sb = new StringBuilder("*filter\n");
        sb.Append(':').Append(HostChain).Append(" - [0:0]\n");
        if (!ipv6) sb.Append(':').Append(ForwardChain).Append(" - [0:0]\n");
        void Rule(string chain, string rule) => sb.Append("-A ").Append(chain).Append(' ').Append(rule).Append('\n');

        Rule(HostChain, "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT");
        if (!ipv6)
        {
            foreach (var dns in plan.HostDnsServers)
                foreach (var proto in new[] { "udp", "tcp" })
                    Rule(HostChain, $"-d {dns}/32 -p {proto} -m {proto} --dport 53 -j ACCEPT");
        }
        Rule(HostChain, "-p tcp -j REJECT --reject-with tcp-reset");
        Rule(HostChain, $"-j REJECT --reject-with {(ipv6 ? "icmp6-port-unreachable" : "icmp-port-unreachable")}");
        if (!ipv6)
        {
            // RETURN: the packet goes on to the rules after this chain (the CNI firewall plugin accepts it).
            foreach (var dns in plan.LinkLocalDnsServers)
                foreach (var proto in new[] { "udp", "tcp" })
                    Rule(ForwardChain, $"-d {dns}/32 -p {proto} -m {proto} --dport 53 -j RETURN");
            Rule(ForwardChain, "-d 169.254.0.0/16 -p tcp -j REJECT --reject-with tcp-reset");
            Rule(ForwardChain, "-d 169.254.0.0/16 -j REJECT --reject-with icmp-port-unreachable");
        }
        return sb.Append("COMMIT\n").ToString();
    }

    private async Task InstallAsync(Plan plan, CancellationToken ct)
    {
        foreach (var family in Families())
        {
            var restore = await RunAsync(family.Tool + "-restore", ["-w", "--noflush"], ct, RestoreScript(plan, family.IsV6));
            if (!restore.Ok) throw Failed($"{family.Tool}-restore", restore.Message);
            foreach (var (parent, chain) in family.Jumps(this))
            {
                if (await IsFirstAsync(family.Tool, parent, chain, ct)) continue;
                for (var i = 0; i < 16 && (await RunAsync(family.Tool, ["-D", parent, .. JumpSpec(chain)], ct)).Ok; i++) { }
                var insert = await RunAsync(family.Tool, ["-I", parent, "1", .. JumpSpec(chain)], ct);
                if (!insert.Ok) throw Failed($"{family.Tool} -I {parent}", insert.Message);
            }
        }
        foreach (var dns in plan.HostDnsServers) LogDnsOnHost(_log, dns.ToString(), options.BridgeName);
        foreach (var dns in plan.LinkLocalDnsServers) LogDnsLinkLocal(_log, dns.ToString(), options.BridgeName);
        LogInstalled(_log, options.BridgeName, HostChain, ForwardChain);
    }

    private async Task<bool> InPlaceAsync(CancellationToken ct)
    {
        foreach (var family in Families())
            foreach (var (parent, chain) in family.Jumps(this))
                if (!await IsFirstAsync(family.Tool, parent, chain, ct)) return false;
        return true;
    }

    private async Task<bool> IsFirstAsync(string tool, string parent, string chain, CancellationToken ct)
    {
        var first = await RunAsync(tool, ["-S", parent, "1"], ct);
        var expected = string.Join(' ', ["-A", parent, .. JumpSpec(chain)]);
        return first.Ok && string.Join(' ', first.Stdout.Replace("\"", "").Split((char[])[' ', '\n'], StringSplitOptions.RemoveEmptyEntries)) == expected;
    }

    private string[] JumpSpec(string chain) => ["-i", options.BridgeName, "-m", "comment", "--comment", Comment, "-j", chain];

    private sealed record Family(string Tool, bool IsV6)
    {
        public IEnumerable<(string Parent, string Chain)> Jumps(BridgeFirewall f) =>
            IsV6 ? [("INPUT", f.HostChain)] : [("INPUT", f.HostChain), ("FORWARD", f.ForwardChain)];
    }

    // IPv6 only where the kernel has it: without it there is nothing to filter (and ip6tables cannot run).
    private static IEnumerable<Family> Families() =>
        File.Exists("/proc/net/if_inet6") ? [new("iptables", false), new("ip6tables", true)] : [new("iptables", false)];

    private static IEnumerable<IPAddress> HostAddresses() =>
        NetworkInterface.GetAllNetworkInterfaces().SelectMany(i => i.GetIPProperties().UnicastAddresses).Select(u => u.Address);

    private static string? ToolPath(string tool) => ToolDirs.Select(d => Path.Combine(d, tool)).FirstOrDefault(File.Exists);

    private static async Task<CommandResult> RunAsync(string tool, IReadOnlyList<string> args, CancellationToken ct, string? stdin = null)
    {
        var path = ToolPath(tool) ?? throw Failed(tool, "not found: install iptables");
        try { return await Command.RunAsync(path, args, ToolTimeout, ct, stdin); }
        catch (TimeoutException e) { throw Failed(tool, e.Message); } // a held xtables lock, say
    }

    private static ContainerStartException Failed(string what, string why) =>
        new($"bridge network policy: {what} failed: {why} (the rules keep bridge jobs away from this host's addresses; " +
            "BatchRunner:Isolation:Bridge:AllowHostAccess=true does without them)");

    [LoggerMessage(EventId = 3111, Level = LogLevel.Information, Message = "Bridge {Bridge}: jobs cannot reach this host's addresses nor 169.254.0.0/16 (iptables chains {HostChain}, {ForwardChain})")]
    private static partial void LogInstalled(ILogger log, string bridge, string hostChain, string forwardChain);

    [LoggerMessage(EventId = 3112, Level = LogLevel.Warning, Message = "Bridge {Bridge}: AllowHostAccess is set, jobs can reach this host's addresses and 169.254.0.0/16")]
    private static partial void LogHostAccessAllowed(ILogger log, string bridge);

    [LoggerMessage(EventId = 3113, Level = LogLevel.Information, Message = "Nameserver {Server} is an address of this host: jobs on bridge {Bridge} may reach it on port 53 (UDP and TCP) and no other port of this host")]
    private static partial void LogDnsOnHost(ILogger log, string server, string bridge);

    [LoggerMessage(EventId = 3114, Level = LogLevel.Information, Message = "Nameserver {Server} is link-local: jobs on bridge {Bridge} may reach it on port 53 (UDP and TCP) only")]
    private static partial void LogDnsLinkLocal(ILogger log, string server, string bridge);
}
