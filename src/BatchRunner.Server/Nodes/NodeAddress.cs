using System.Net;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;

namespace BatchRunner.Server.Nodes;

/// <summary>
/// The URL other nodes use to reach this node's HTTP endpoint (for the logs and outputs of the jobs it
/// ran): <c>BatchRunner:AdvertiseUrl</c>, else the first address Kestrel listens on, with a wildcard
/// host (0.0.0.0, [::], +, *) replaced by this machine's host name. Null until the server listens.
/// </summary>
public sealed class NodeAddress(IServer server, string? configured)
{
    public string? Url => !string.IsNullOrWhiteSpace(configured) ? configured.TrimEnd('/') : FromServer();

    private string? FromServer()
    {
        var addresses = server.Features.Get<IServerAddressesFeature>()?.Addresses;
        var first = addresses?.FirstOrDefault(a => a.StartsWith("http://", StringComparison.Ordinal))
                    ?? addresses?.FirstOrDefault();
        return first is null ? null : Advertisable(first);
    }

    /// <summary>"http://0.0.0.0:8080" → "http://HOSTNAME:8080"; a concrete address is kept as it is.</summary>
    public static string Advertisable(string listenAddress)
    {
        var fixedUp = listenAddress.Replace("://+", "://0.0.0.0").Replace("://*", "://0.0.0.0");
        if (!Uri.TryCreate(fixedUp, UriKind.Absolute, out var uri)) return listenAddress.TrimEnd('/');
        var host = uri.Host.Trim('[', ']');
        if (IPAddress.TryParse(host, out var ip) && (ip.Equals(IPAddress.Any) || ip.Equals(IPAddress.IPv6Any)))
            return new UriBuilder(uri) { Host = Dns.GetHostName() }.Uri.ToString().TrimEnd('/');
        return uri.ToString().TrimEnd('/');
    }
}
