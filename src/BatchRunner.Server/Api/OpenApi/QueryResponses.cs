using System.Reflection;
using Microsoft.AspNetCore.OpenApi;
using Microsoft.OpenApi;

namespace BatchRunner.Server.Api.OpenApi;

/// <summary>
/// The 400 every endpoint that <see cref="QueryParameters"/> judges can answer (a query parameter it does not take, or
/// a value of the wrong type), read from the endpoint as that check reads it: a handler method, and no
/// <see cref="QueryParameters.AnyQueryMetadata"/>.
/// </summary>
internal sealed class QueryResponses : IOpenApiOperationTransformer
{
    public const string Why = "a query parameter this operation does not take, or a value of the wrong type (errors names it)";

    public Task TransformAsync(OpenApiOperation operation, OpenApiOperationTransformerContext context, CancellationToken cancellationToken)
    {
        var metadata = context.Description.ActionDescriptor.EndpointMetadata;
        if (!metadata.OfType<MethodInfo>().Any() || metadata.OfType<QueryParameters.AnyQueryMetadata>().Any()) return Task.CompletedTask;
        operation.Responses ??= [];
        if (operation.Responses.TryGetValue("400", out var existing) && existing is OpenApiResponse { Content: { } content } && content.ContainsKey("application/problem+json"))
            return Task.CompletedTask;
        operation.Responses["400"] = ApiDocumentTransformer.Problem(Why, context.Document);
        return Task.CompletedTask;
    }
}
