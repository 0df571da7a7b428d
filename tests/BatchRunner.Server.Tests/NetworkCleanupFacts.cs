using System.Diagnostics;
using BatchRunner.Runtime.Network;
using BatchRunner.Testing;

namespace BatchRunner.Server.Tests;

/// <summary><c>batchrunner cleanup-network</c>: what an uninstall runs to take the bridge's host rules away for good.</summary>
public sealed class NetworkCleanupFacts
{
    [Fact]
    public async Task CleanupNetwork_RemovesTheConfiguredBridgesRules()
    {
        var bridge = "brx" + Guid.NewGuid().ToString("N")[..6]; // rules may name a bridge that does not exist
        var firewall = new BridgeFirewall(new BridgeNetworkOptions { BridgeName = bridge });
        await firewall.EnsureAsync([], CancellationToken.None);
        try
        {
            Assert.Contains($"-N {firewall.HostChain}", await ExternalCommand.RunAsync("iptables", ["-w", "-S"]));

            var psi = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
            {
                ArgumentList = { Path.Combine(AppContext.BaseDirectory, "batchrunner.dll"), "cleanup-network", $"--BatchRunner:Isolation:Bridge:Name={bridge}" },
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            using var process = Process.Start(psi)!;
            var stdout = process.StandardOutput.ReadToEndAsync();
            var stderr = process.StandardError.ReadToEndAsync();
            using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            await process.WaitForExitAsync(deadline.Token);
            Assert.True(process.ExitCode == 0, await stdout + await stderr);
            Assert.Contains($"removed iptables chains {firewall.HostChain} and {firewall.ForwardChain}", await stdout);

            foreach (var tool in new[] { "iptables", "ip6tables" })
                Assert.DoesNotContain(bridge, await ExternalCommand.RunAsync(tool, ["-w", "-S"]));
        }
        finally
        {
            await firewall.RemoveAsync(CancellationToken.None);
        }
    }
}
