using Microsoft.AspNetCore.Authorization;
using Microsoft.AspNetCore.Authorization.Infrastructure;
using Microsoft.AspNetCore.OpenApi;
using Microsoft.OpenApi;

namespace BatchRunner.Server.Api.OpenApi;

/// <summary>
/// The answers an operation owes to its authorization policy, read from the endpoint itself (its
/// <c>RequireAuthorization</c> metadata and the policy's roles), so that they cannot drift from the code:
/// <list type="bullet">
/// <item>no policy: the operation needs no key (an empty security requirement overrides the document's);</item>
/// <item>a policy: 401 (no, wrong or revoked key), 429 (the key's role is past its rate limit,
/// <c>BatchRunner:Auth:RateLimits</c>), 503 (the database, which holds the keys, is away);</item>
/// <item>a policy that not every role meets: 403 (the key's role may not).</item>
/// </list>
/// </summary>
internal sealed class AuthResponses : IOpenApiOperationTransformer
{
    public async Task TransformAsync(OpenApiOperation operation, OpenApiOperationTransformerContext context, CancellationToken cancellationToken)
    {
        var metadata = context.Description.ActionDescriptor.EndpointMetadata;
        var authorize = metadata.OfType<IAuthorizeData>().ToList();
        if (authorize.Count == 0 || metadata.OfType<IAllowAnonymous>().Any())
        {
            operation.Security = [];
            return;
        }
        operation.Responses ??= [];
        var document = context.Document;
        operation.Responses["401"] = ApiDocumentTransformer.Problem("the API key is missing, wrong or revoked", document);
        operation.Responses["429"] = ApiDocumentTransformer.Problem("the key's role is past its rate limit (BatchRunner:Auth:RateLimits)", document, retryAfter: true);
        operation.Responses["503"] = ApiDocumentTransformer.Problem(ApiResponses.Outage, document, retryAfter: true);

        var policy = await AuthorizationPolicy.CombineAsync(context.ApplicationServices.GetRequiredService<IAuthorizationPolicyProvider>(), authorize);
        var roles = policy?.Requirements.OfType<RolesAuthorizationRequirement>().Select(r => r.AllowedRoles.ToHashSet()).ToList() ?? [];
        var allowed = Auth.Roles.All.Where(role => roles.All(r => r.Contains(role))).ToList();
        if (allowed.Count < Auth.Roles.All.Count)
            operation.Responses["403"] = ApiDocumentTransformer.Problem($"the key's role may not do this (needs {string.Join(" or ", allowed)})", document);
    }
}
