using BatchRunner.Runtime.Network;

namespace BatchRunner.Server.Hosting;

/// <summary>
/// <c>batchrunner cleanup-network [settings]</c>: removes what the bridge network leaves on the host for good — the
/// iptables rules of BatchRunner's own for the configured bridge (<see cref="BridgeFirewall"/>) and the bridge
/// itself when no job is attached to it. For uninstalling, with BatchRunner stopped: a running node puts both back at its next bridge job. Reads
/// the settings as the server does (appsettings.json, environment, BATCHRUNNER_* shortcuts, command line).
/// </summary>
public static class NetworkCleanup
{
    public const string Command = "cleanup-network";

    public static async Task<int> RunAsync(string[] args, TextWriter output, CancellationToken ct = default)
    {
        var configuration = new ConfigurationBuilder()
            .SetBasePath(AppContext.BaseDirectory)
            .AddJsonFile("appsettings.json", optional: true)
            .AddEnvironmentVariables()
            .AddInMemoryCollection(EnvironmentShortcuts.Read())
            .AddCommandLine(args)
            .Build();
        var options = BatchRunnerOptions.From(configuration);
        var bridge = Components.BridgeOptionsFor(options.Isolation);

        var firewall = new BridgeFirewall(bridge);
        await firewall.RemoveAsync(ct);
        await output.WriteLineAsync($"removed iptables chains {firewall.HostChain} and {firewall.ForwardChain} (if present) and their jumps");
        var device = Path.Combine("/sys/class/net", bridge.BridgeName);
        if (!Directory.Exists(device)) return 0;
        // A port is a job's veth: the bridge of a BatchRunner still running (here or sharing it) stays.
        var ports = Directory.Exists(Path.Combine(device, "brif")) ? Directory.GetFileSystemEntries(Path.Combine(device, "brif")).Length : 0;
        if (ports > 0)
        {
            await output.WriteLineAsync($"kept bridge {bridge.BridgeName}: {ports} job(s) still attached (stop BatchRunner first)");
            return 0;
        }
        var ip = new System.Diagnostics.ProcessStartInfo("ip", ["link", "delete", bridge.BridgeName]) { UseShellExecute = false };
        using var p = System.Diagnostics.Process.Start(ip)!;
        await p.WaitForExitAsync(ct);
        await output.WriteLineAsync(p.ExitCode == 0 ? $"deleted bridge {bridge.BridgeName}" : $"could not delete bridge {bridge.BridgeName} (ip exited with {p.ExitCode})");
        if (p.ExitCode != 0) return 1;
        return 0;
    }
}
