using BatchRunner.Server.Nodes;
using BatchRunner.Server.Storage;
using Microsoft.AspNetCore.Http.HttpResults;

namespace BatchRunner.Server.Api;

/// <summary>GET /api/v1/nodes: worker nodes with capacity, allocation and running jobs.</summary>
public static class NodesApi
{
    public static RouteGroupBuilder MapNodesApiV1(this IEndpointRouteBuilder app)
    {
        var api = app.MapGroup("/api/v1/nodes").WithTags("Nodes").RequireApiKey();
        api.MapGet("/", ListAsync).WithName("ListNodes");
        return api;
    }

    public static async Task<Ok<IReadOnlyList<NodeInfo>>> ListAsync(NodeStore nodes, bool? all, CancellationToken ct) =>
        TypedResults.Ok(await nodes.ListAsync(aliveOnly: all != true, ct));
}
