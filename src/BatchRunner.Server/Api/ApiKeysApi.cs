using BatchRunner.Server.Auth;
using BatchRunner.Server.Storage;
using Microsoft.AspNetCore.Http.HttpResults;

namespace BatchRunner.Server.Api;

/// <summary>The body of <c>POST /api/v1/apikeys</c>.</summary>
public sealed record ApiKeyRequest(string? Name, string? Tenant, string? Role);

/// <summary>A key as listed: never its secret.</summary>
public sealed record ApiKeyDto(Guid Id, string Name, string Tenant, string Role, string Prefix, DateTimeOffset CreatedAt,
    string? CreatedBy, DateTimeOffset? LastUsedAt)
{
    public static ApiKeyDto From(ApiKeyRecord k) => new(k.Id, k.Name, k.Tenant, k.Role, k.Prefix, k.CreatedAt, k.CreatedBy, k.LastUsedAt);
}

/// <summary>A key just created: the only answer that ever carries <see cref="Key"/>.</summary>
public sealed record CreatedApiKeyDto(Guid Id, string Name, string Tenant, string Role, DateTimeOffset CreatedAt, string Key, string Prefix);

/// <summary>
/// HTTP API v1 for API keys (admin only); tenants are <see cref="TenantsApi"/>. A public contract: extend it, never rename or remove.
/// A key belongs to one tenant, which is created with its first key.
/// </summary>
public static class ApiKeysApi
{
    public const int MaxNameLength = 200;

    public static IEndpointRouteBuilder MapApiKeysApiV1(this IEndpointRouteBuilder app)
    {
        var keys = app.MapGroup("/api/v1/apikeys").WithTags("API keys").RequireAuthorization(Policies.Admin);
        keys.MapPost("/", CreateAsync).WithName("CreateApiKey").Accepts<ApiKeyRequest>("application/json");
        keys.MapGet("/", ListAsync).WithName("ListApiKeys");
        keys.MapDelete("/{id}", RevokeAsync).WithName("RevokeApiKey");
        return app;
    }

    public static async Task<Results<Created<CreatedApiKeyDto>, ValidationProblem, ProblemHttpResult>> CreateAsync(
        HttpRequest request, ApiKeyStore store, CancellationToken ct)
    {
        var read = await JsonBody.ReadAsync<ApiKeyRequest>(request.Body, "body", "an API key request (name, tenant, role)", request.ContentLength, ct);
        if (read.Invalid is { } invalid) return invalid;
        if (read.TooLarge is { } tooLarge) return tooLarge;
        var body = read.Value;
        var errors = new Dictionary<string, string[]>();
        var name = body?.Name?.Trim();
        if (string.IsNullOrEmpty(name) || name.Length > MaxNameLength || name.Any(char.IsControl))
            errors["name"] = [$"name is required: 1-{MaxNameLength} printable characters saying what the key is for"];
        var tenant = body?.Tenant ?? BootstrapKey.Tenant;
        if (!TenantsApi.IsValidName(tenant))
            errors["tenant"] = [TenantsApi.NameRule];
        var role = body?.Role ?? Roles.User;
        if (!Roles.All.Contains(role))
            errors["role"] = [$"role must be one of {string.Join(", ", Roles.All)}"];
        if (errors.Count > 0) return TypedResults.ValidationProblem(errors, title: "The API key request is invalid");

        var key = ApiKeySecrets.NewKey();
        var created = await store.CreateAsync(Guid.CreateVersion7(), name!, tenant, role, ApiKeySecrets.Hash(key), ApiKeySecrets.DisplayPrefix(key),
            Caller.Of(request.HttpContext).KeyId, ct);
        return TypedResults.Created($"/api/v1/apikeys/{created.Id}",
            new CreatedApiKeyDto(created.Id, created.Name, created.Tenant, created.Role, created.CreatedAt, key, created.Prefix));
    }

    public static async Task<Ok<IReadOnlyList<ApiKeyDto>>> ListAsync(ApiKeyStore store, CancellationToken ct) =>
        TypedResults.Ok<IReadOnlyList<ApiKeyDto>>((await store.ListAsync(ct)).Select(ApiKeyDto.From).ToList());

    /// <summary>Revokes a key: refused from then on, at once on this node and within the key cache's lifetime on the others.</summary>
    public static async Task<Results<NoContent, ProblemHttpResult>> RevokeAsync(string id, ApiKeyStore store, KeyCache cache, CancellationToken ct)
    {
        if (id == BootstrapKey.KeyId)
            return TypedResults.Problem(statusCode: StatusCodes.Status409Conflict, title: "The bootstrap key cannot be revoked here",
                detail: "it is configured, not stored: change BATCHRUNNER_API_KEY (or DATA/api-key) on every node");
        if (!Guid.TryParse(id, out var keyId) || !await store.RevokeAsync(keyId, ct))
            return TypedResults.Problem(statusCode: StatusCodes.Status404NotFound, title: "API key not found", detail: $"no active API key with id \"{id}\"");
        cache.Forget(keyId.ToString());
        return TypedResults.NoContent();
    }
}
