using Microsoft.AspNetCore.OpenApi;
using Microsoft.AspNetCore.WebUtilities;
using Microsoft.OpenApi;

namespace BatchRunner.Server.Api.OpenApi;

/// <summary>
/// Makes <c>/openapi/v1.json</c> what a client generator needs: the API key as a bearer security scheme (global;
/// <see cref="AuthResponses"/> exempts the operations without a policy), every error answer of <see cref="ApiResponses"/> as
/// <c>application/problem+json</c>, the multipart form of <c>POST /api/v1/jobs</c> as its parts, the bodies the
/// handlers write themselves (logs, output files, health) and <c>/metrics</c>, which is not a route handler.
/// One place, so that endpoint files stay free of documentation attributes.
/// </summary>
public sealed class ApiDocumentTransformer : IOpenApiDocumentTransformer
{
    public const string SecurityScheme = "bearer";
    public const string ProblemSchema = "ProblemDetails";
    public const string QuantitySchema = "Quantity";
    public const string HealthSchema = "Health";

    public async Task TransformAsync(OpenApiDocument document, OpenApiDocumentTransformerContext context, CancellationToken cancellationToken)
    {
        document.Info = new OpenApiInfo
        {
            Title = "BatchRunner API",
            Version = "v1",
            Description = "Batch jobs in OCI containers: submit, follow, read logs and outputs. A public contract: paths, fields " +
                          "and states are only ever added. Errors are RFC 7807 problem details.",
        };
        document.Components ??= new OpenApiComponents();
        document.Components.Schemas ??= new Dictionary<string, IOpenApiSchema>();
        document.Components.SecuritySchemes ??= new Dictionary<string, IOpenApiSecurityScheme>();
        document.Components.SecuritySchemes[SecurityScheme] = new OpenApiSecurityScheme
        {
            Type = SecuritySchemeType.Http,
            Scheme = "bearer",
            Description = "The API key as \"Authorization: Bearer KEY\" (the server's BATCHRUNNER_API_KEY, or the key it generated " +
                          "in DATA/api-key). The server also accepts HTTP Basic with any user name and the key as the password " +
                          "(what a browser sends to the dashboard).",
        };
        document.Security = [new OpenApiSecurityRequirement { [new OpenApiSecuritySchemeReference(SecurityScheme, document)] = [] }];
        document.Components.Schemas[ProblemSchema] = Schemas.Problem();
        document.Components.Schemas[QuantitySchema] = Schemas.Quantity();
        document.Components.Schemas[HealthSchema] = Schemas.Health();
        Schemas.UseQuantity(document);
        // The default answer of GET /api/v1/jobs, which the generator dropped for the summary view's (Bodies.JobList).
        if (!document.Components.Schemas.ContainsKey(nameof(JobListDto)))
        {
            var list = await context.GetOrCreateSchemaAsync(typeof(JobListDto), null, cancellationToken);
            if (list.Properties is { } p && document.Components.Schemas.ContainsKey(nameof(JobDto)))
                p["items"] = new OpenApiSchema { Type = JsonSchemaType.Array, Items = new OpenApiSchemaReference(nameof(JobDto), document) };
            document.Components.Schemas[nameof(JobListDto)] = list;
        }

        document.Paths ??= [];
        AddMetrics(document);
        foreach (var (path, item) in document.Paths)
        {
            if (item.Operations is null) continue;
            foreach (var (method, operation) in item.Operations)
                Describe($"{method.Method.ToUpperInvariant()} {path}", operation, document);
        }
    }

    private static void Describe(string key, OpenApiOperation operation, OpenApiDocument document)
    {
        operation.Responses ??= [];
        foreach (var (status, why) in ApiResponses.Errors.GetValueOrDefault(key) ?? new Dictionary<int, string>())
        {
            var code = status.ToString(System.Globalization.CultureInfo.InvariantCulture);
            // A 400 that the handlers' ValidationProblem results described keeps its schema (errors per field).
            if (operation.Responses.TryGetValue(code, out var existing) && existing is OpenApiResponse { Content: { } content } described
                && content.ContainsKey("application/problem+json"))
                described.Description = status == 400 && why != QueryResponses.Why ? $"{why}; or {QueryResponses.Why}" : why;
            else
                operation.Responses[code] = Problem(why, document, retryAfter: status is 503 or 429);
        }
        switch (key)
        {
            case "POST /api/v1/jobs":
                Bodies.JobSubmission(operation, document);
                break;
            case "GET /api/v1/jobs":
                Bodies.JobList(operation, document);
                break;
            case "GET /api/v1/jobs/{id}/logs":
                Bodies.Logs(operation);
                break;
            case "GET /api/v1/jobs/{id}/outputs/{path}":
                Bodies.OutputFile(operation);
                break;
            case "GET /api/v1/jobs/{id}/outputs.zip":
                Bodies.OutputArchive(operation, "application/zip");
                break;
            case "GET /api/v1/jobs/{id}/outputs.tar.gz":
                Bodies.OutputArchive(operation, "application/gzip");
                break;
            case "GET /healthz":
                Bodies.Health(operation, document);
                break;
        }
    }

    private static void AddMetrics(OpenApiDocument document)
    {
        var metrics = new OpenApiPathItem();
        metrics.AddOperation(HttpMethod.Get, new OpenApiOperation
        {
            OperationId = "GetMetrics",
            Security = [], // scraped without a key, like /healthz
            Tags = new HashSet<OpenApiTagReference> { new("Observability", document) },
            Summary = "Prometheus metrics of this node (text exposition format)",
            Responses = new OpenApiResponses
            {
                ["200"] = new OpenApiResponse
                {
                    Description = ReasonPhrases.GetReasonPhrase(200),
                    Content = new Dictionary<string, OpenApiMediaType> { ["text/plain"] = new() { Schema = new OpenApiSchema { Type = JsonSchemaType.String } } },
                },
            },
        });
        document.Paths["/metrics"] = metrics;
        document.Tags ??= new HashSet<OpenApiTag>();
        document.Tags.Add(new OpenApiTag { Name = "Observability" });
    }

    /// <summary>An error answer: RFC 7807 problem details, with Retry-After where the server sends it (429, 503).</summary>
    internal static OpenApiResponse Problem(string why, OpenApiDocument? document, bool retryAfter = false) => new()
    {
        Description = why,
        Content = new Dictionary<string, OpenApiMediaType>
        {
            ["application/problem+json"] = new() { Schema = new OpenApiSchemaReference(ProblemSchema, document) },
        },
        Headers = retryAfter
            ? new Dictionary<string, IOpenApiHeader>
            {
                ["Retry-After"] = new OpenApiHeader { Description = "seconds to wait before trying again", Schema = new OpenApiSchema { Type = JsonSchemaType.Integer } },
            }
            : null,
    };
}
