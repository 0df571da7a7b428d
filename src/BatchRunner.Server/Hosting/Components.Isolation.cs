using BatchRunner.Runtime;
using BatchRunner.Runtime.Network;
using BatchRunner.Server.Execution;
using BatchRunner.Server.Storage;
using Microsoft.Extensions.Options;

namespace BatchRunner.Server.Hosting;

internal static partial class Components
{
    /// <summary>The runtime with this node's isolation settings: host network only where allowed, the
    /// bridge network where allowed, the capability allow-list, optional user-namespace remapping.</summary>
    public static RuncRuntimeOptions RuntimeOptionsFor(RuntimeSelection selection, DataPaths paths, IsolationOptions iso) => new()
    {
        BinaryPath = selection.Path,
        Name = selection.Name,
        Version = selection.Version,
        StateRoot = paths.RuntimeState,
        AllowHostNetwork = iso.AllowedNetworkModes.Contains(Core.NetworkModes.Host),
        AllowedCapabilities = iso.NormalizedCapabilities,
        Bridge = iso.AllowedNetworkModes.Contains(Core.NetworkModes.Bridge) ? BridgeOptionsFor(iso) : null,
        UserNamespace = iso.UserNamespace.Enabled
            ? new UserNamespaceOptions(iso.UserNamespace.HostUidStart, iso.UserNamespace.HostGidStart, iso.UserNamespace.Size)
            : null,
    };

    /// <summary>The node's bridge network, as the runtime and the cleanup-network command see it.</summary>
    public static BridgeNetworkOptions BridgeOptionsFor(IsolationOptions iso) => new()
    {
        BridgeName = iso.Bridge.Name,
        NetworkName = iso.Bridge.Network,
        Subnet = iso.Bridge.Subnet,
        IsolateContainers = iso.Bridge.IsolateJobs,
        IpMasq = iso.Bridge.IpMasq,
        DnsServers = iso.Bridge.DnsServers,
        AllowHostAccess = iso.Bridge.AllowHostAccess,
        PluginDir = iso.Bridge.PluginDir,
        StateDir = iso.Bridge.StateDir ?? Path.Combine("/run/batchrunner/cni", iso.Bridge.Network),
    };

    private static IsolationOptions IsolationOf(IServiceProvider sp) => sp.GetRequiredService<IOptions<BatchRunnerOptions>>().Value.Isolation;
}
