using System.Net;
using System.Net.Sockets;

namespace BatchRunner.Server.Notifications;

/// <summary>
/// Which hosts a webhook may call (<c>Webhooks:AllowedHosts</c>). A job's submitter chooses the URL, so without a
/// policy any tenant could make a node POST to the node's own services, the cluster's private endpoints or a cloud
/// metadata service. Loopback, "this host", link-local and metadata addresses are refused unless a pattern other
/// than <c>*</c> names the host; the check is made on the URL at submission and again on the address actually
/// connected to (<see cref="ConnectAsync"/>), so a name that resolves to such an address is refused too.
/// </summary>
/// <remarks>
/// HOOK (issue 18, branch netpolicy): the registry policy there (Oci/Registry/RegistryPolicy) has the same rules
/// with wildcard patterns, IPv4-mapped and NAT64 forms and proxies; once it is in main this class delegates to it.
/// Until then the patterns are <c>*</c> and exact <c>host</c> or <c>host:port</c>.
/// </remarks>
public sealed class WebhookPolicy
{
    public const string SettingName = "BatchRunner:Webhooks:AllowedHosts";

    private static readonly HashSet<string> MetadataNames = new(StringComparer.OrdinalIgnoreCase)
    {
        "localhost", "metadata.google.internal", "metadata.goog", "metadata", "instance-data",
    };

    private readonly IReadOnlyList<string> _patterns;

    public WebhookPolicy(IEnumerable<string> patterns) =>
        _patterns = patterns.Select(p => p.Trim().ToLowerInvariant()).Where(p => p.Length > 0).ToList();

    /// <summary>Why a webhook may not call <paramref name="url"/> (judged by its host as written), or null.</summary>
    public string? CheckUrl(Uri url)
    {
        var host = Host(url.IdnHost);
        if (IsExplicit(host, url.Port)) return null;
        if (!_patterns.Contains("*")) return $"host {host} is not in {SettingName} ({string.Join(", ", _patterns)})";
        if (MetadataNames.Contains(host)) return $"host {host} is this host or a cloud metadata service{Remedy}";
        return IPAddress.TryParse(host, out var literal) && SpecialKind(literal) is { } kind ? $"{literal} is {kind}{Remedy}" : null;
    }

    /// <summary><see cref="SocketsHttpHandler.ConnectCallback"/>: resolves the host and connects only to allowed addresses.</summary>
    public async ValueTask<Stream> ConnectAsync(SocketsHttpConnectionContext context, CancellationToken ct)
    {
        var host = Host(context.DnsEndPoint.Host);
        var port = context.DnsEndPoint.Port;
        var addresses = IPAddress.TryParse(host, out var literal) ? [literal] : await Dns.GetHostAddressesAsync(host, ct);
        if (!IsExplicit(host, port))
        {
            var refused = addresses.FirstOrDefault(a => SpecialKind(a) is not null);
            addresses = addresses.Where(a => SpecialKind(a) is null).ToArray();
            if (addresses.Length == 0 && refused is not null)
                throw new WebhookRefusedException($"{host} resolves to {refused}, {SpecialKind(refused)}{Remedy}");
        }
        if (addresses.Length == 0) throw new SocketException((int)SocketError.HostNotFound);
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await socket.ConnectAsync(addresses, port, ct);
            return new NetworkStream(socket, ownsSocket: true);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    private bool IsExplicit(string host, int port) => _patterns.Any(p => p != "*" && (p == host || p == $"{host}:{port}" || p == $"[{host}]:{port}"));

    private static string Remedy => $" (refused unless {SettingName} names the host)";

    private static string Host(string host) => host.Trim('[', ']').TrimEnd('.').ToLowerInvariant();

    private static string? SpecialKind(IPAddress a)
    {
        if (a.IsIPv4MappedToIPv6) a = a.MapToIPv4();
        if (IPAddress.IsLoopback(a)) return "a loopback address";
        var b = a.GetAddressBytes();
        if (a.AddressFamily == AddressFamily.InterNetwork)
            return b[0] == 0 ? "an address of this host" : b[0] == 169 && b[1] == 254 ? "a link-local or metadata address"
                : a.Equals(IPAddress.Parse("100.100.100.200")) ? "a cloud metadata address" : null;
        return a.Equals(IPAddress.IPv6Any) ? "an address of this host" : a.IsIPv6LinkLocal ? "a link-local address"
            : a.Equals(IPAddress.Parse("fd00:ec2::254")) ? "a cloud metadata address" : null;
    }
}

/// <summary>A call <see cref="WebhookPolicy"/> refused.</summary>
public sealed class WebhookRefusedException(string message) : Exception(message);
