using System.Net;
using BatchRunner.Runtime.Network;
using BatchRunner.Testing;

namespace BatchRunner.Runtime.Tests;

/// <summary>
/// The bridge's host rules as iptables holds them, for a bridge name of the test's own (no bridge needs to exist for
/// rules to name it): first in INPUT and FORWARD, once, back in first place after another rule was put ahead,
/// gone after removal. And what the rules say, for nameservers on the host and link-local ones.
/// </summary>
public sealed class BridgeFirewallFacts : IAsyncLifetime
{
    private readonly BridgeFirewall _firewall = new(new BridgeNetworkOptions { BridgeName = "brf" + Guid.NewGuid().ToString("N")[..6] });

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync() => _firewall.RemoveAsync(CancellationToken.None);

    private static Task<string> Rules(string tool = "iptables") => ExternalCommand.RunAsync(tool, ["-w", "-S"]);

    /// <summary>The first rule of <paramref name="chain"/>, past other BatchRunner bridges' jumps: tests running beside
    /// this one put their own bridge's jumps first too (the clean-clone run at cf24198 found one ahead in INPUT).</summary>
    private string FirstRule(string rules, string chain) =>
        rules.Split('\n').First(l => l.StartsWith($"-A {chain} ", StringComparison.Ordinal) &&
            !(l.Contains(" -j BRUNNER-", StringComparison.Ordinal) && !l.EndsWith($"-j {_firewall.HostChain}", StringComparison.Ordinal) &&
              !l.EndsWith($"-j {_firewall.ForwardChain}", StringComparison.Ordinal)));

    [Fact]
    public async Task EnsureAsync_PutsItsJumpsFirst_OnceEach_AndFirstAgainAfterAnotherRuleWentAhead()
    {
        await _firewall.EnsureAsync([], CancellationToken.None);
        await _firewall.EnsureAsync([], CancellationToken.None);
        var rules = await Rules();
        Assert.Contains($"-N {_firewall.HostChain}", rules);
        Assert.Contains($"-N {_firewall.ForwardChain}", rules);
        Assert.EndsWith($"-j {_firewall.HostChain}", FirstRule(rules, "INPUT"));
        Assert.EndsWith($"-j {_firewall.ForwardChain}", FirstRule(rules, "FORWARD"));
        Assert.Single(rules.Split('\n'), l => l.EndsWith($"-j {_firewall.HostChain}", StringComparison.Ordinal));
        Assert.Contains($"-A {_firewall.HostChain} -p tcp -j REJECT --reject-with tcp-reset", rules);
        Assert.Contains($"-A {_firewall.ForwardChain} -d 169.254.0.0/16 -p tcp -j REJECT --reject-with tcp-reset", rules);
        if (File.Exists("/proc/net/if_inet6"))
            Assert.EndsWith($"-j {_firewall.HostChain}", FirstRule(await Rules("ip6tables"), "INPUT"));

        // As the CNI firewall plugin does when its own jump is missing: insert at the top.
        var bridge = _firewall.HostChain["BRUNNER-HOST-".Length..];
        await ExternalCommand.RunAsync("iptables", ["-w", "-I", "FORWARD", "1", "-i", bridge, "-j", "ACCEPT"]);
        try
        {
            await _firewall.EnsureAsync([], CancellationToken.None);
            rules = await Rules();
            Assert.EndsWith($"-j {_firewall.ForwardChain}", FirstRule(rules, "FORWARD"));
            Assert.Single(rules.Split('\n'), l => l.EndsWith($"-j {_firewall.ForwardChain}", StringComparison.Ordinal));
        }
        finally
        {
            await ExternalCommand.RunAsync("iptables", ["-w", "-D", "FORWARD", "-i", bridge, "-j", "ACCEPT"]);
        }
    }

    [Fact]
    public async Task RemoveAsync_LeavesNoChainAndNoJump()
    {
        await _firewall.EnsureAsync([], CancellationToken.None);
        await _firewall.RemoveAsync(CancellationToken.None);
        await _firewall.RemoveAsync(CancellationToken.None); // idempotent
        foreach (var tool in new[] { "iptables", "ip6tables" })
        {
            var rules = await Rules(tool);
            Assert.DoesNotContain(_firewall.HostChain, rules);
            Assert.DoesNotContain(_firewall.ForwardChain, rules);
        }
    }

    [Fact]
    public void PlanFor_OpensPort53_OfNameserversOnThisHostAndLinkLocalOnes_Only()
    {
        var plan = BridgeFirewall.PlanFor(["10.88.0.1", "192.0.2.53", "169.254.169.254", "fd00::1", "not-an-address", "10.88.0.1"],
            [IPAddress.Parse("10.88.0.1"), IPAddress.Parse("192.0.2.2")]);
        Assert.Equal([IPAddress.Parse("10.88.0.1")], plan.HostDnsServers);
        Assert.Equal([IPAddress.Parse("169.254.169.254")], plan.LinkLocalDnsServers);

        var v4 = _firewall.RestoreScript(plan, ipv6: false);
        Assert.Contains($"-A {_firewall.HostChain} -d 10.88.0.1/32 -p udp -m udp --dport 53 -j ACCEPT\n", v4);
        Assert.Contains($"-A {_firewall.HostChain} -d 10.88.0.1/32 -p tcp -m tcp --dport 53 -j ACCEPT\n", v4);
        Assert.Contains($"-A {_firewall.ForwardChain} -d 169.254.169.254/32 -p udp -m udp --dport 53 -j RETURN\n", v4);
        Assert.DoesNotContain("192.0.2.53", v4);
        // The exceptions come before the rejections.
        Assert.True(v4.IndexOf("--dport 53 -j ACCEPT", StringComparison.Ordinal) < v4.IndexOf($"-A {_firewall.HostChain} -p tcp -j REJECT", StringComparison.Ordinal));
        Assert.True(v4.IndexOf("--dport 53 -j RETURN", StringComparison.Ordinal) < v4.IndexOf("-d 169.254.0.0/16", StringComparison.Ordinal));

        var v6 = _firewall.RestoreScript(plan, ipv6: true);
        Assert.DoesNotContain("--dport 53", v6);
        Assert.DoesNotContain(_firewall.ForwardChain, v6);
        Assert.Contains("icmp6-port-unreachable", v6);
    }
}
