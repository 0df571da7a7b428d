using BatchRunner.Oci.Registry;

namespace BatchRunner.Server.Notifications;

/// <summary>
/// Which hosts a webhook may call (<c>Webhooks:AllowedHosts</c>): the registry policy's rules (<see cref="RegistryPolicy"/>)
/// on another list. A job's submitter chooses the URL, so without a policy any tenant could make a node POST to the
/// node's own services or a cloud metadata service. Loopback, "this host", link-local and metadata addresses are
/// refused unless a pattern other than <c>*</c> names the host; the check is made on the URL at submission
/// (<see cref="CheckUrl"/>) and again on the address actually connected to (<see cref="ConnectAsync"/>), so a name
/// that resolves to such an address is refused too.
/// </summary>
public sealed class WebhookPolicy(IEnumerable<string> patterns)
{
    public const string SettingName = "BatchRunner:Webhooks:AllowedHosts";

    private readonly RegistryPolicy _rules = new(patterns, SettingName);

    /// <summary>Why a webhook may not call <paramref name="url"/> (judged by its host as written), or null. A name under
    /// <c>localhost</c> is always loopback (RFC 6761): refused here already rather than only when it is called.</summary>
    public string? CheckUrl(Uri url)
    {
        var host = url.IdnHost.TrimEnd('.').ToLowerInvariant();
        if ((host == "localhost" || host.EndsWith(".localhost", StringComparison.Ordinal)) && !_rules.IsExplicit(host, url.Port))
            return $"webhook host {url.Authority}: {host} is this host's loopback (refused unless {SettingName} names the host explicitly)";
        return _rules.CheckAllowed(url, $"webhook host {url.Authority}");
    }

    /// <summary><see cref="SocketsHttpHandler.ConnectCallback"/>: resolves the host and connects only to allowed addresses
    /// (a refusal is a <see cref="RegistryPolicyException"/>).</summary>
    public ValueTask<Stream> ConnectAsync(SocketsHttpConnectionContext context, CancellationToken ct) => _rules.ConnectAsync(context, ct);
}
