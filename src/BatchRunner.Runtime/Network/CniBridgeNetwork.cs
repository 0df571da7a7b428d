using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace BatchRunner.Runtime.Network;

/// <summary>The node's bridge network for containers in <see cref="ContainerNetworkMode.Bridge"/> mode.</summary>
public sealed record BridgeNetworkOptions
{
    /// <summary>CNI network name; also names the host-local IPAM store and the NAT chains' comments.</summary>
    public string NetworkName { get; init; } = "batchrunner";
    /// <summary>The Linux bridge (at most 15 characters), created on first use by the bridge plugin.</summary>
    public string BridgeName { get; init; } = "br-batchrunner";
    /// <summary>Private range containers get addresses from; the bridge holds the first one (the gateway).</summary>
    public string Subnet { get; init; } = "10.88.0.0/16";
    /// <summary>Where the CNI plugins are (Debian: containernetworking-plugins).</summary>
    public string PluginDir { get; init; } = "/usr/lib/cni";
    /// <summary>IPAM allocations and cached ADD results (needed by DEL); under /run, so a reboot forgets them with the namespaces.</summary>
    public string StateDir { get; init; } = "/run/batchrunner/cni";
    /// <summary>Where named network namespaces are bind-mounted (as `ip netns` does).</summary>
    public string NetnsDir { get; init; } = "/run/netns";
    /// <summary>True (default): containers on the bridge cannot reach each other (bridge port isolation);
    /// they still reach the gateway and, through NAT, the outside. False: they share one L2 segment.</summary>
    public bool IsolateContainers { get; init; } = true;
    /// <summary>Masquerade traffic leaving the subnet (egress to the outside world).</summary>
    public bool IpMasq { get; init; } = true;
    /// <summary>Nameservers for bridge containers' /etc/resolv.conf; empty: the host's, less loopback ones.</summary>
    public IReadOnlyList<string> DnsServers { get; init; } = [];
    /// <summary>False (default): containers cannot reach this host's own addresses (any interface, the gateway
    /// included) nor 169.254.0.0/16, except port 53 of a nameserver they use (<see cref="BridgeFirewall"/>).
    /// True: no such rules; a job can reach every service of the host that listens beyond loopback.</summary>
    public bool AllowHostAccess { get; init; }
    public TimeSpan PluginTimeout { get; init; } = TimeSpan.FromSeconds(30);
}

/// <summary>A container's place on the bridge: its network namespace (which the container joins) and address.</summary>
public sealed record NetworkAttachment(string ContainerId, string NetnsPath, string? Address, string? HostInterface);

/// <summary>
/// Connects containers to a Linux bridge with the standard CNI plugins (bridge + host-local IPAM,
/// then firewall), invoked as the CNI spec 1.0 prescribes: the plugin binary from CNI_PATH, CNI_COMMAND,
/// CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME in the environment, the network config on stdin, the result on
/// stdout; a chain is run plugin by plugin with the previous result as prevResult, DEL in reverse order.
/// </summary>
/// <remarks>
/// Lifecycle: <see cref="AttachAsync"/> creates a named network namespace (`ip netns add ID`: a bind mount
/// in <see cref="BridgeNetworkOptions.NetnsDir"/>) with its loopback up (a job may talk to itself on
/// 127.0.0.1, as in network mode none), runs ADD on it, caches the result and makes sure the bridge's host
/// rules (<see cref="BridgeFirewall"/>) are in place before returning; the container joins it by path. <see cref="DetachAsync"/> runs DEL (which frees the address and removes the NAT
/// rules — it needs the namespace, so it runs first) and deletes the namespace, which destroys the veth
/// pair. Everything is named by the container id, so <see cref="CleanupOrphansAsync"/> finds what a
/// crashed worker left (namespaces, address leases, cached results) by the owner's id prefix.
/// </remarks>
public sealed partial class CniBridgeNetwork(BridgeNetworkOptions options, ILogger? logger = null)
{
    public const string CniVersion = "1.0.0";
    public const string InterfaceName = "eth0";
    private readonly ILogger _log = logger ?? NullLogger.Instance;

    public BridgeNetworkOptions Options => options;
    /// <summary>The host rules of this bridge.</summary>
    public BridgeFirewall Firewall { get; } = new(options, logger);
    private string ResultsDir => Path.Combine(options.StateDir, "results");
    private string IpamDir => Path.Combine(options.StateDir, "ipam");
    public string NetnsPath(string containerId) => Path.Combine(options.NetnsDir, containerId);

    /// <summary>The plugin chain; host-local keeps its leases under our state dir, not /var/lib/cni.</summary>
    private JsonArray Plugins() =>
    [
        new JsonObject
        {
            ["type"] = "bridge",
            ["bridge"] = options.BridgeName,
            ["isGateway"] = true,
            ["ipMasq"] = options.IpMasq,
            ["hairpinMode"] = false,
            ["ipam"] = new JsonObject
            {
                ["type"] = "host-local",
                ["ranges"] = new JsonArray(new JsonArray(new JsonObject { ["subnet"] = options.Subnet })),
                ["routes"] = new JsonArray(new JsonObject { ["dst"] = "0.0.0.0/0" }),
                ["dataDir"] = IpamDir,
            },
        },
        // Accepts the container's traffic in FORWARD even where the host's policy is DROP (a Docker host).
        new JsonObject { ["type"] = "firewall", ["backend"] = "iptables" },
    ];

    /// <param name="nameservers">The nameservers the container's resolv.conf names: their port 53 stays open
    /// where they are host or link-local addresses.</param>
    public async Task<NetworkAttachment> AttachAsync(string containerId, IReadOnlyList<string> nameservers, CancellationToken ct)
    {
        Directory.CreateDirectory(ResultsDir);
        Directory.CreateDirectory(IpamDir);
        var netns = NetnsPath(containerId);
        await RunToolAsync("ip", ["netns", "add", containerId], ct);
        try
        {
            // A new namespace's loopback is down; runc brings it up only in namespaces it creates itself.
            await RunToolAsync("ip", ["-n", containerId, "link", "set", "lo", "up"], ct);
            JsonNode? prev = null;
            foreach (var plugin in Plugins())
                prev = await InvokeAsync("ADD", containerId, netns, (JsonObject)plugin!, prev, ct);
            await File.WriteAllTextAsync(ResultPath(containerId), prev!.ToJsonString(), ct);
            var address = prev["ips"]?.AsArray().Select(i => i?["address"]?.GetValue<string>()).FirstOrDefault(a => a is not null);
            var hostVeth = prev["interfaces"]?.AsArray()
                .Where(i => i?["sandbox"] is null && i?["name"]?.GetValue<string>() != options.BridgeName)
                .Select(i => i!["name"]!.GetValue<string>()).FirstOrDefault();
            if (options.IsolateContainers)
            {
                if (hostVeth is null) throw new ContainerStartException($"CNI bridge result for {containerId} names no host interface to isolate");
                // Isolated bridge ports forward only to non-isolated ones (the bridge itself: gateway and NAT).
                await RunToolAsync("bridge", ["link", "set", "dev", hostVeth, "isolated", "on"], ct);
            }
            // After ADD: the firewall plugin may just have put its own FORWARD rule first.
            await Firewall.EnsureAsync(nameservers, ct);
            LogAttached(_log, containerId, address ?? "?", hostVeth ?? "?");
            return new NetworkAttachment(containerId, netns, address, hostVeth);
        }
        catch
        {
            await DetachAsync(containerId, CancellationToken.None);
            throw;
        }
    }

    /// <summary>DEL (address, NAT and firewall rules) then the namespace (and with it the veth pair). Idempotent;
    /// errors are logged, and what could not be removed is found again by <see cref="CleanupOrphansAsync"/>.</summary>
    public async Task DetachAsync(string containerId, CancellationToken ct)
    {
        var netns = NetnsPath(containerId);
        var cached = File.Exists(ResultPath(containerId)) ? JsonNode.Parse(await File.ReadAllTextAsync(ResultPath(containerId), ct)) : null;
        var delOk = true;
        foreach (var plugin in Plugins().Reverse())
        {
            try { await InvokeAsync("DEL", containerId, File.Exists(netns) ? netns : "", (JsonObject)plugin!.DeepClone(), cached?.DeepClone(), ct); }
            catch (Exception e) when (e is ContainerStartException or IOException or TimeoutException or JsonException)
            {
                delOk = false;
                LogDetachIncomplete(_log, containerId, e.Message);
            }
        }
        if (File.Exists(netns))
        {
            try { await RunToolAsync("ip", ["netns", "delete", containerId], ct); }
            catch (ContainerStartException e) { delOk = false; LogDetachIncomplete(_log, containerId, e.Message); }
        }
        if (delOk) File.Delete(ResultPath(containerId));
    }

    /// <summary>Detaches every container whose id starts with <paramref name="prefix"/> and still has a namespace,
    /// an address lease or a cached result here. Returns their ids.</summary>
    public async Task<IReadOnlyList<string>> CleanupOrphansAsync(string prefix, CancellationToken ct)
    {
        if (string.IsNullOrEmpty(prefix)) throw new ArgumentException("an id prefix is required", nameof(prefix));
        var ids = new SortedSet<string>(StringComparer.Ordinal);
        if (Directory.Exists(options.NetnsDir))
            foreach (var f in Directory.EnumerateFiles(options.NetnsDir, prefix + "*")) ids.Add(Path.GetFileName(f));
        if (Directory.Exists(ResultsDir))
            foreach (var f in Directory.EnumerateFiles(ResultsDir, prefix + "*.json")) ids.Add(Path.GetFileNameWithoutExtension(f));
        var leases = Path.Combine(IpamDir, options.NetworkName);
        if (Directory.Exists(leases))
        {
            // host-local: one file per address, holding "CONTAINERID\r\nIFNAME".
            foreach (var f in Directory.EnumerateFiles(leases))
            {
                var name = Path.GetFileName(f);
                if (name.StartsWith("last_reserved_ip", StringComparison.Ordinal) || name == "lock") continue;
                string owner;
                try { owner = File.ReadLines(f).FirstOrDefault()?.Trim() ?? ""; }
                catch (IOException) { continue; }
                if (owner.StartsWith(prefix, StringComparison.Ordinal)) ids.Add(owner);
            }
        }
        foreach (var id in ids)
        {
            await DetachAsync(id, ct);
            LogOrphanDetached(_log, id);
        }
        return ids.ToList();
    }

    private string ResultPath(string containerId) => Path.Combine(ResultsDir, containerId + ".json");

    private async Task<JsonNode?> InvokeAsync(string command, string containerId, string netns, JsonObject plugin, JsonNode? prevResult, CancellationToken ct)
    {
        var type = plugin["type"]!.GetValue<string>();
        var binary = Path.Combine(options.PluginDir, type);
        if (!File.Exists(binary))
            throw new ContainerStartException($"CNI plugin {binary} not found: install containernetworking-plugins (bridge network)");
        plugin["cniVersion"] = CniVersion;
        plugin["name"] = options.NetworkName;
        if (prevResult is not null) plugin["prevResult"] = prevResult;

        var psi = new ProcessStartInfo(binary)
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        psi.Environment["CNI_COMMAND"] = command;
        psi.Environment["CNI_CONTAINERID"] = containerId;
        psi.Environment["CNI_NETNS"] = netns;
        psi.Environment["CNI_IFNAME"] = InterfaceName;
        psi.Environment["CNI_PATH"] = options.PluginDir;
        psi.Environment["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
        using var p = Process.Start(psi) ?? throw new IOException($"could not start {binary}");
        var stdout = p.StandardOutput.ReadToEndAsync(CancellationToken.None);
        var stderr = p.StandardError.ReadToEndAsync(CancellationToken.None);
        await p.StandardInput.WriteAsync(plugin.ToJsonString());
        p.StandardInput.Close();
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        cts.CancelAfter(options.PluginTimeout);
        try { await p.WaitForExitAsync(cts.Token); }
        catch (OperationCanceledException)
        {
            try { p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
            ct.ThrowIfCancellationRequested();
            throw new TimeoutException($"CNI {type} {command} for {containerId} did not finish within {options.PluginTimeout.TotalSeconds:0} s");
        }
        var output = await stdout;
        if (p.ExitCode != 0)
        {
            // Errors are JSON on stdout: {"code": N, "msg": "...", "details": "..."}.
            var why = (await stderr).Trim();
            try
            {
                var err = JsonNode.Parse(output);
                why = $"{err?["msg"]?.GetValue<string>()} {err?["details"]?.GetValue<string>()}".Trim();
            }
            catch (JsonException) { if (why.Length == 0) why = output.Trim(); }
            throw new ContainerStartException($"CNI {type} {command} for {containerId} failed: {why}");
        }
        return command == "ADD" ? JsonNode.Parse(output) : null;
    }

    private static async Task RunToolAsync(string tool, IReadOnlyList<string> args, CancellationToken ct)
    {
        var path = new[] { "/usr/sbin", "/sbin", "/usr/bin", "/bin" }.Select(d => Path.Combine(d, tool)).FirstOrDefault(File.Exists)
                   ?? throw new ContainerStartException($"{tool} not found: install iproute2 (bridge network)");
        var r = await Command.RunAsync(path, args, TimeSpan.FromSeconds(30), ct);
        if (!r.Ok) throw new ContainerStartException($"{tool} {string.Join(' ', args)} failed: {r.Message}");
    }

    [LoggerMessage(EventId = 3101, Level = LogLevel.Information, Message = "Container {ContainerId} attached to the bridge network: {Address} via {HostInterface}")]
    private static partial void LogAttached(ILogger log, string containerId, string address, string hostInterface);

    [LoggerMessage(EventId = 3102, Level = LogLevel.Warning, Message = "Detaching container {ContainerId} from the bridge network incomplete: {Reason}")]
    private static partial void LogDetachIncomplete(ILogger log, string containerId, string reason);

    [LoggerMessage(EventId = 3103, Level = LogLevel.Warning, Message = "Removed network leftovers of container {ContainerId}")]
    private static partial void LogOrphanDetached(ILogger log, string containerId);
}
