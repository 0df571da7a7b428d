using System.Net;
using System.Net.Sockets;

namespace BatchRunner.Oci.Registry;

/// <summary>
/// Which hosts a pull may contact. An image names its registry, so without a policy any job submitter could make
/// the node send requests to the node's own services or a cloud metadata endpoint and read the answer back from the
/// job's error message (server-side request forgery).
/// </summary>
/// <remarks>
/// <para>Patterns: <c>*</c> (any host that is not special, below), <c>*.example.com</c> (any name below
/// example.com), <c>ghcr.io</c> (that host, any port), <c>127.0.0.1:5000</c> or <c>[::1]:5000</c> (that host and
/// port). Names compare case-insensitively; a pattern without a port matches every port.</para>
/// <para>Special hosts are loopback (127.0.0.0/8, ::1), "this host" (0.0.0.0/8, ::), link-local (169.254.0.0/16,
/// fe80::/10) and cloud metadata services (169.254.169.254, fd00:ec2::254, 100.100.100.200,
/// metadata.google.internal, …), also when written as IPv4-mapped or NAT64 IPv6 addresses. They are refused unless a
/// pattern other than <c>*</c> matches the host: listing a host is the explicit allowance.</para>
/// <para>What is checked, and where (<see cref="RegistryClient"/>): the image's registry must match a pattern;
/// every host a pull contacts (the registry, a redirect target such as blob storage, a token realm) must not be
/// special unless listed; and the address a connection is actually made to is checked again after name
/// resolution (<see cref="ConnectAsync"/>), so a public name that resolves to a loopback or link-local address
/// (DNS rebinding included) is refused too. Redirect and realm hosts need not match the patterns themselves:
/// registries hand out storage and auth hosts of their own choosing (Docker Hub's CDN, S3), and the pattern list
/// says which registries are trusted, not which CDNs they use.</para>
/// </remarks>
public sealed class RegistryPolicy
{
    public const string AnyPublicHost = "*";

    private static readonly IPAddress[] MetadataAddresses =
        [IPAddress.Parse("169.254.169.254"), IPAddress.Parse("fd00:ec2::254"), IPAddress.Parse("100.100.100.200")];

    private static readonly HashSet<string> MetadataNames = new(StringComparer.OrdinalIgnoreCase)
    {
        "metadata.google.internal", "metadata.goog", "metadata", "instance-data", "instance-data.ec2.internal",
    };

    private static readonly IPAddress Nat64Prefix = IPAddress.Parse("64:ff9b::");

    private readonly HostPattern[] _patterns;

    /// <param name="patterns">Host patterns (see remarks).</param>
    /// <param name="settingName">The setting the patterns come from, named in refusals.</param>
    /// <exception cref="FormatException">A pattern is malformed.</exception>
    public RegistryPolicy(IEnumerable<string> patterns, string settingName = "AllowedRegistries")
    {
        Patterns = patterns.Select(p => p.Trim()).Where(p => p.Length > 0).ToList();
        _patterns = Patterns.Select(p => HostPattern.TryParse(p, out var parsed, out var error) ? parsed : throw new FormatException(error)).ToArray();
        SettingName = settingName;
    }

    /// <summary>The default: every registry whose host is not special.</summary>
    public static RegistryPolicy PublicHosts { get; } = new([AnyPublicHost]);

    public IReadOnlyList<string> Patterns { get; }
    public string SettingName { get; }

    /// <summary>Null when <paramref name="pattern"/> is well formed, else why not.</summary>
    public static string? Validate(string pattern) => HostPattern.TryParse(pattern.Trim(), out _, out var error) ? null : error;

    /// <summary>Why a pull may not contact <paramref name="registry"/> (as written in image references, reached at
    /// <paramref name="baseUri"/>), or null when it may.</summary>
    public string? CheckRegistry(string registry, Uri baseUri)
    {
        var host = Normalize(HostOf(registry));
        if (!_patterns.Any(p => p.Matches(host, baseUri.Port)))
            return $"registry {registry} is not in {SettingName} ({string.Join(", ", Patterns)})";
        return CheckHost(baseUri, $"registry {registry}");
    }

    /// <summary>Why <paramref name="uri"/> may not be called at all: its host and port match no pattern, or its host is
    /// special and not named (see <see cref="CheckHost"/>); null when it may. For a URL a user chose that must be on the
    /// list (a webhook), where <see cref="CheckRegistry"/> is for an image's registry. <paramref name="subject"/> names
    /// it in the answer ("webhook host X").</summary>
    public string? CheckAllowed(Uri uri, string subject)
    {
        if (!_patterns.Any(p => p.Matches(Normalize(uri.IdnHost), uri.Port)))
            return $"{subject} is not in {SettingName} ({string.Join(", ", Patterns)})";
        return CheckHost(uri, subject);
    }

    /// <summary>Why a pull may not contact the host of <paramref name="uri"/>, judged by the name or literal address
    /// alone (resolved addresses are checked at connection time); null when it may. <paramref name="subject"/> says
    /// what the host is to the pull ("registry X", "redirect from X").</summary>
    public string? CheckHost(Uri uri, string subject)
    {
        if (uri.Scheme is not ("http" or "https")) return $"{subject}: scheme {uri.Scheme} is not http or https";
        var host = Normalize(uri.IdnHost);
        if (IsExplicit(host, uri.Port)) return null;
        if (MetadataNames.Contains(host)) return $"{subject}: {host} is a cloud metadata service{Remedy}";
        if (IPAddress.TryParse(host, out var literal) && SpecialKind(literal) is { } kind)
            return $"{subject}: {literal} is {kind}{Remedy}";
        return null;
    }

    /// <summary>Why a connection to <paramref name="address"/> for <paramref name="host"/>:<paramref name="port"/> is
    /// refused, or null when it is allowed.</summary>
    public string? CheckAddress(string host, int port, IPAddress address)
    {
        host = Normalize(host);
        if (IsExplicit(host, port)) return null;
        return SpecialKind(address) is { } kind
            ? (IPAddress.TryParse(host, out _) ? $"{host} is {kind}" : $"{host} resolves to {address}, {kind}") + Remedy
            : null;
    }

    private string Remedy => $" (refused unless {SettingName} names the host explicitly)";

    /// <summary>A pattern other than <c>*</c> matches: the operator named this host.</summary>
    public bool IsExplicit(string host, int port)
    {
        host = Normalize(host);
        return _patterns.Any(p => !p.IsAnyHost && p.Matches(host, port));
    }

    /// <summary>"a loopback address", "a link-local address", ...: why <paramref name="address"/> is special; null
    /// for an ordinary address.</summary>
    public static string? SpecialKind(IPAddress address)
    {
        if (address.IsIPv4MappedToIPv6) address = address.MapToIPv4();
        if (address.AddressFamily == AddressFamily.InterNetworkV6 && InPrefix(address, Nat64Prefix, 96))
            address = new IPAddress(address.GetAddressBytes()[12..]);
        if (MetadataAddresses.Contains(address)) return "a cloud metadata address";
        if (IPAddress.IsLoopback(address)) return "a loopback address";
        var b = address.GetAddressBytes();
        if (address.AddressFamily == AddressFamily.InterNetwork)
        {
            if (b[0] == 0) return "an address of this host (0.0.0.0/8)";
            if (b[0] == 169 && b[1] == 254) return "a link-local address";
            return null;
        }
        if (address.Equals(IPAddress.IPv6Any)) return "an address of this host (::)";
        if (address.IsIPv6LinkLocal) return "a link-local address";
        return null;
    }

    /// <summary>
    /// <see cref="SocketsHttpHandler.ConnectCallback"/> that resolves the host itself and connects only to addresses
    /// this policy allows, so that the check covers the address actually connected to, not an earlier lookup.
    /// A connection to a proxy (the endpoint is not the request's host) is the operator's choice and not judged; the
    /// request's host is then judged by what it resolves to here, where it resolves here at all (the proxy resolves
    /// the name itself, so this is the best that can be checked).
    /// </summary>
    public async ValueTask<Stream> ConnectAsync(SocketsHttpConnectionContext context, CancellationToken ct)
    {
        var endpoint = context.DnsEndPoint;
        var host = Normalize(endpoint.Host);
        var target = context.InitialRequestMessage.RequestUri;
        var viaProxy = target is not null && Normalize(target.IdnHost) != host;
        var addresses = IPAddress.TryParse(host, out var literal) ? [literal] : await Dns.GetHostAddressesAsync(host, ct);
        if (addresses.Length == 0) throw new SocketException((int)SocketError.HostNotFound);
        if (!viaProxy)
        {
            var refusals = addresses.Select(a => CheckAddress(host, endpoint.Port, a)).ToList();
            if (refusals.FirstOrDefault(r => r is not null) is { } refused && refusals.All(r => r is not null))
                throw new RegistryPolicyException(refused);
            // A name with ordinary and special addresses: connect to the ordinary ones only.
            addresses = addresses.Where((_, i) => refusals[i] is null).ToArray();
        }
        else if (!IsExplicit(target!.IdnHost, target.Port))
        {
            IPAddress[] resolved;
            try { resolved = await Dns.GetHostAddressesAsync(Normalize(target.IdnHost), ct); }
            catch (SocketException) { resolved = []; } // only the proxy can resolve it
            if (resolved.Select(a => CheckAddress(target.IdnHost, target.Port, a)).FirstOrDefault(r => r is not null) is { } refused)
                throw new RegistryPolicyException(refused);
        }
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await socket.ConnectAsync(addresses, endpoint.Port, ct);
            return new NetworkStream(socket, ownsSocket: true);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    private static bool InPrefix(IPAddress address, IPAddress prefix, int bits)
    {
        var a = address.GetAddressBytes();
        var p = prefix.GetAddressBytes();
        if (a.Length != p.Length) return false;
        for (var i = 0; i < bits / 8; i++)
            if (a[i] != p[i]) return false;
        return true;
    }

    internal static string Normalize(string host) => host.Trim('[', ']').TrimEnd('.').ToLowerInvariant();

    /// <summary>The host of a registry as written in image references: "host", "host:port", "[v6]", "[v6]:port".</summary>
    internal static string HostOf(string registry)
    {
        if (registry.StartsWith('['))
        {
            var close = registry.IndexOf(']');
            return close > 0 ? registry[1..close] : registry;
        }
        var colon = registry.LastIndexOf(':');
        return colon > 0 && registry.IndexOf(':') == colon ? registry[..colon] : registry;
    }

    private sealed record HostPattern(string Host, int? Port)
    {
        public bool IsAnyHost => Host == "*";

        public bool Matches(string host, int port)
        {
            if (Port is { } p && p != port) return false;
            if (IsAnyHost) return true;
            if (Host.StartsWith("*.", StringComparison.Ordinal))
                return host.EndsWith(Host[1..], StringComparison.Ordinal) && host.Length > Host.Length - 1;
            // Addresses compare by value: "::1" and "0:0::1" are one host.
            if (IPAddress.TryParse(Host, out var a) && IPAddress.TryParse(host, out var b)) return a.Equals(b);
            return Host == host;
        }

        public static bool TryParse(string text, out HostPattern pattern, out string? error)
        {
            pattern = null!;
            error = null;
            string host;
            int? port = null;
            if (text.StartsWith('['))
            {
                var close = text.IndexOf(']');
                if (close < 0) return Fail(text, "has '[' without ']'", out error);
                host = text[1..close];
                var rest = text[(close + 1)..];
                if (rest.Length > 0 && !(rest.StartsWith(':') && TryPort(rest[1..], out port)))
                    return Fail(text, "has something other than :PORT after ']'", out error);
                if (!IPAddress.TryParse(host, out _)) return Fail(text, "has no IP address between '[' and ']'", out error);
            }
            else if (text.Count(c => c == ':') > 1)
            {
                host = text; // a bare IPv6 address: no port
                if (!IPAddress.TryParse(host, out _)) return Fail(text, "is neither host[:port] nor an IPv6 address (write [ADDRESS]:PORT)", out error);
            }
            else
            {
                var colon = text.IndexOf(':');
                host = colon < 0 ? text : text[..colon];
                if (colon >= 0 && !TryPort(text[(colon + 1)..], out port)) return Fail(text, "has a port that is not a number from 1 to 65535", out error);
                var name = host.StartsWith("*.", StringComparison.Ordinal) ? host[2..] : host;
                if (host != "*" && (name.Length == 0 || name.Contains('*') || Uri.CheckHostName(name) == UriHostNameType.Unknown))
                    return Fail(text, "is not a host name, an address, '*' or '*.DOMAIN'", out error);
            }
            pattern = new HostPattern(Normalize(host), port);
            return true;
        }

        private static bool TryPort(string s, out int? port)
        {
            port = int.TryParse(s, out var p) && p is > 0 and < 65536 ? p : null;
            return port is not null;
        }

        private static bool Fail(string text, string why, out string? error)
        {
            error = $"registry pattern \"{text}\" {why}";
            return false;
        }
    }
}

/// <summary>A connection a <see cref="RegistryPolicy"/> refused; the message says which host, why and what allows it.</summary>
public sealed class RegistryPolicyException(string message) : Exception(message);
