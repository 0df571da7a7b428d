using BatchRunner.Server.Nodes;

namespace BatchRunner.Server.Tests;

public sealed class NodeAddressFacts
{
    [Theory]
    [InlineData("http://127.0.0.1:8080", "http://127.0.0.1:8080")]
    [InlineData("http://10.1.2.3:9000/", "http://10.1.2.3:9000")]
    [InlineData("http://[::1]:8080", "http://[::1]:8080")]
    public void Advertisable_KeepsAConcreteAddress(string listen, string expected) =>
        Assert.Equal(expected, NodeAddress.Advertisable(listen));

    [Theory]
    [InlineData("http://0.0.0.0:8080")]
    [InlineData("http://[::]:8080")]
    [InlineData("http://+:8080")]
    [InlineData("http://*:8080")]
    public void Advertisable_ReplacesAWildcardWithTheHostName(string listen) =>
        Assert.Equal($"http://{System.Net.Dns.GetHostName()}:8080".ToLowerInvariant(), NodeAddress.Advertisable(listen).ToLowerInvariant());
}
