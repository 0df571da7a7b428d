using BatchRunner.Runtime.Network;

namespace BatchRunner.Runtime.Tests;

public sealed class NameFilesFacts
{
    private const string Stub = "# managed by systemd-resolved\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n";
    private const string Upstream = "nameserver 192.0.2.1\nnameserver 2001:db8::1\nsearch lan\n";

    [Fact]
    public void Bridge_UsesResolvedUpstreams_WhenTheHostNamesOnlyTheLoopbackStub()
    {
        var text = NameFiles.ResolvConf(ContainerNetworkMode.Bridge, Stub, Upstream, null, out var warning);
        Assert.Equal("nameserver 192.0.2.1\nnameserver 2001:db8::1\noptions edns0 trust-ad\nsearch lan\n", text);
        Assert.Null(warning);
    }

    [Fact]
    public void Bridge_WarnsAndWritesNoNameserver_WhenOnlyLoopbackServersExist()
    {
        var text = NameFiles.ResolvConf(ContainerNetworkMode.Bridge, "nameserver 127.0.0.1\nnameserver ::1\n", null, null, out var warning);
        Assert.DoesNotContain("nameserver", text);
        Assert.Contains("127.0.0.1, ::1", warning);
        Assert.Contains("DnsServers", warning);
    }

    [Fact]
    public void ConfiguredServers_ReplaceTheHosts_AndKeepSearchAndOptions()
    {
        var text = NameFiles.ResolvConf(ContainerNetworkMode.Bridge, Stub, Upstream, ["10.0.0.2"], out _);
        Assert.Equal("nameserver 10.0.0.2\noptions edns0 trust-ad\nsearch lan\n", text);
    }

    [Fact]
    public void Host_KeepsLoopbackServers_AndNone_GetsNoFile()
    {
        Assert.Equal("nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n", NameFiles.ResolvConf(ContainerNetworkMode.Host, Stub, Upstream, null, out _));
        Assert.Null(NameFiles.ResolvConf(ContainerNetworkMode.None, Stub, Upstream, null, out _));
    }

    [Fact]
    public void Hosts_MapTheHostnameToTheBridgeAddress_OrToLoopback()
    {
        Assert.Equal("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n10.88.0.5\tjob\n", NameFiles.Hosts("job", "10.88.0.5/16"));
        Assert.EndsWith("127.0.1.1\tjob\n", NameFiles.Hosts("job", null));
        Assert.Equal("127.0.0.1 localhost\n10.1.1.1 db\n127.0.1.1\tjob\n", NameFiles.Hosts("job", null, "127.0.0.1 localhost\n10.1.1.1 db\n"));
    }
}
