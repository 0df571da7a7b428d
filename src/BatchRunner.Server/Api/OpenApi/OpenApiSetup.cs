namespace BatchRunner.Server.Api.OpenApi;

public static class OpenApiSetup
{
    /// <summary>The document served at <c>/openapi/v1.json</c> (OpenAPI 3.1), completed by <see cref="ApiDocumentTransformer"/>.</summary>
    public static IServiceCollection AddBatchRunnerOpenApi(this IServiceCollection services) =>
        services.AddOpenApi("v1", o =>
        {
            o.AddSchemaTransformer(Schemas.StrictNumbersAsync);
            // Operation transformers run while the paths are built, document transformers on the finished document.
            o.AddOperationTransformer<AuthResponses>();
            o.AddOperationTransformer<QueryResponses>();
            o.AddDocumentTransformer<ApiDocumentTransformer>();
        });
}
