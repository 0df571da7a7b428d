using System.Text;
using System.Text.Encodings.Web;
using Microsoft.AspNetCore.Authentication;
using Microsoft.Extensions.Options;

namespace BatchRunner.Server.Auth;

/// <summary>
/// The API's authentication scheme: <c>Authorization: Bearer KEY</c>, or HTTP Basic with any user name and the key
/// as password (what a browser can send to the dashboard). The key is the bootstrap key (<see cref="BootstrapKey"/>)
/// or one of <c>/api/v1/apikeys</c> (<see cref="KeyCache"/>); the principal carries the key id, its tenant and its
/// role (<see cref="Caller"/>). Refusals are RFC 7807 problem details: 401 for a missing, wrong or revoked key, 403
/// for a key whose role lacks the endpoint's policy.
/// </summary>
public sealed class ApiKeyAuthentication(
    IOptionsMonitor<AuthenticationSchemeOptions> options, ILoggerFactory logger, UrlEncoder encoder, BootstrapKey bootstrap, KeyCache keys)
    : AuthenticationHandler<AuthenticationSchemeOptions>(options, logger, encoder)
{
    public const string SchemeName = "ApiKey";

    protected override async Task<AuthenticateResult> HandleAuthenticateAsync()
    {
        if (PresentedKey(Request.Headers.Authorization.ToString()) is not { } presented) return AuthenticateResult.NoResult();
        var hash = ApiKeySecrets.Hash(presented);
        Caller? caller = bootstrap.Matches(hash) ? bootstrap.Caller
            : await keys.FindAsync(hash, Context.RequestAborted) is { } identity ? new Caller(identity.KeyId, identity.Tenant, identity.Role)
            : null;
        if (caller is null) return AuthenticateResult.Fail("unknown or revoked API key");
        return AuthenticateResult.Success(new AuthenticationTicket(caller.ToPrincipal(SchemeName), SchemeName));
    }

    /// <summary>The key in a Bearer or Basic (password) Authorization header; null when there is none.</summary>
    internal static string? PresentedKey(string header)
    {
        if (header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase))
            return header[7..].Trim() is { Length: > 0 } key ? key : null;
        if (!header.StartsWith("Basic ", StringComparison.OrdinalIgnoreCase)) return null;
        try
        {
            var decoded = Encoding.UTF8.GetString(Convert.FromBase64String(header[6..].Trim()));
            var colon = decoded.IndexOf(':');
            return colon >= 0 && colon < decoded.Length - 1 ? decoded[(colon + 1)..] : null;
        }
        catch (FormatException) { return null; }
    }

    protected override Task HandleChallengeAsync(AuthenticationProperties properties)
    {
        Response.Headers.WWWAuthenticate = "Bearer realm=\"batchrunner\"";
        return TypedResults.Problem(statusCode: StatusCodes.Status401Unauthorized, title: "Unauthorized",
            detail: "send an API key as \"Authorization: Bearer <key>\" (BATCHRUNNER_API_KEY, DATA/api-key, or a key from /api/v1/apikeys); " +
                    "a revoked key is refused").ExecuteAsync(Context);
    }

    protected override Task HandleForbiddenAsync(AuthenticationProperties properties)
    {
        // Only a role's permission is refused here, before any job is looked up: a 403 never tells whether a job exists.
        var detail = Caller.From(Context.User)?.Role switch
        {
            Roles.Viewer => "viewer keys only read: submitting, cancelling and deleting jobs need a user or admin key",
            var role => $"this needs an admin key (this key's role is \"{role}\")",
        };
        return TypedResults.Problem(statusCode: StatusCodes.Status403Forbidden, title: "Forbidden", detail: detail).ExecuteAsync(Context);
    }
}
