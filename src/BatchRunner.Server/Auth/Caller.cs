using System.Security.Claims;

namespace BatchRunner.Server.Auth;

/// <summary>Who sent a request: the key's id, its tenant and its role (from the principal <see cref="ApiKeyAuthentication"/> made).</summary>
public sealed record Caller(string KeyId, string Tenant, string Role)
{
    public const string KeyIdClaim = "batchrunner:key_id";
    public const string TenantClaim = "batchrunner:tenant";

    public bool IsAdmin => Role == Roles.Admin;

    /// <summary>The tenant whose jobs this caller may see: its own, or null (every tenant) for an admin.</summary>
    public string? Scope => IsAdmin ? null : Tenant;

    public ClaimsPrincipal ToPrincipal(string scheme) => new(new ClaimsIdentity(
        [new Claim(KeyIdClaim, KeyId), new Claim(TenantClaim, Tenant), new Claim(ClaimTypes.Role, Role)], scheme, KeyIdClaim, ClaimTypes.Role));

    /// <summary>The caller of an authenticated request.</summary>
    /// <exception cref="InvalidOperationException">The request was not authenticated with an API key (an endpoint without a policy).</exception>
    public static Caller Of(HttpContext http) => From(http.User)
        ?? throw new InvalidOperationException("the endpoint needs an authorization policy: the request was not authenticated with an API key");

    public static Caller? From(ClaimsPrincipal user) =>
        user.FindFirst(KeyIdClaim)?.Value is { } id && user.FindFirst(TenantClaim)?.Value is { } tenant && user.FindFirst(ClaimTypes.Role)?.Value is { } role
            ? new Caller(id, tenant, role)
            : null;
}
