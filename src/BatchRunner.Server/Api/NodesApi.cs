using BatchRunner.Server.Nodes;
using BatchRunner.Server.Storage;
using Microsoft.AspNetCore.Http.HttpResults;

namespace BatchRunner.Server.Api;

/// <summary>GET /api/v1/nodes: worker nodes with capacity, allocation and running jobs. Every role reads it; the
/// running jobs listed are the caller's tenant's (an admin's: all), the allocation counts every tenant's.</summary>
public static class NodesApi
{
    public static RouteGroupBuilder MapNodesApiV1(this IEndpointRouteBuilder app)
    {
        var api = app.MapGroup("/api/v1/nodes").WithTags("Nodes").RequireAuthorization(Auth.Policies.Read);
        api.MapGet("/", ListAsync).WithName("ListNodes");
        return api;
    }

    public static async Task<Ok<IReadOnlyList<NodeInfo>>> ListAsync(HttpContext http, NodeStore nodes, bool? all, CancellationToken ct) =>
        TypedResults.Ok(await nodes.ListAsync(aliveOnly: all != true, ct, tenant: Auth.Caller.Of(http).Scope));
}
