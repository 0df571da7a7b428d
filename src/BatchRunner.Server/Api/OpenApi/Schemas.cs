using System.Text.Json.Nodes;
using Microsoft.AspNetCore.OpenApi;
using Microsoft.OpenApi;

namespace BatchRunner.Server.Api.OpenApi;

/// <summary>Schemas the generator cannot derive from types: problem details, quantities, the health body; and the
/// number form the API really documents.</summary>
internal static class Schemas
{
    /// <summary>RFC 7807 problem details as every error of the API carries them (400s add <c>errors</c>: field → messages).</summary>
    public static OpenApiSchema Problem() => new()
    {
        Type = JsonSchemaType.Object,
        Description = "RFC 7807 problem details",
        Properties = new Dictionary<string, IOpenApiSchema>
        {
            ["type"] = Nullable(JsonSchemaType.String),
            ["title"] = Nullable(JsonSchemaType.String),
            ["status"] = Nullable(JsonSchemaType.Integer, "int32"),
            ["detail"] = Nullable(JsonSchemaType.String),
            ["instance"] = Nullable(JsonSchemaType.String),
            ["traceId"] = Nullable(JsonSchemaType.String),
            ["errors"] = new OpenApiSchema
            {
                Type = JsonSchemaType.Object | JsonSchemaType.Null,
                Description = "400: the messages for each field that is wrong",
                AdditionalProperties = new OpenApiSchema { Type = JsonSchemaType.Array, Items = new OpenApiSchema { Type = JsonSchemaType.String } },
            },
        },
    };

    /// <summary>A size (memory, shmSize): a quantity string or an integer of bytes.</summary>
    public static OpenApiSchema Quantity() => new()
    {
        Description = "A size: a quantity string (\"64Mi\", \"2Gi\", \"512M\") or an integer number of bytes.",
        OneOf = [new OpenApiSchema { Type = JsonSchemaType.String }, new OpenApiSchema { Type = JsonSchemaType.Integer, Format = "int64" }],
    };

    /// <summary>The request fields that are sizes (JsonElements, read by <c>JobSpecValidator</c> as a quantity or
    /// bytes). A new JsonElement field belongs here, or gets a schema of its own: OpenApiDocumentFacts fails while the
    /// document still has the "any JSON value" schema.</summary>
    private static readonly (string Schema, string Property)[] Sizes =
        [("ResourceSubmission", "memory"), ("ResourceSubmission", "disk"), ("JobSubmission", "shmSize"), ("LogsSubmission", "maxBytes"), ("RunningLimitRequest", "memory")];

    /// <summary>The JSON elements of the spec that hold sizes get <see cref="Quantity"/> instead of "any JSON value".</summary>
    public static void UseQuantity(OpenApiDocument document)
    {
        foreach (var (schema, property) in Sizes)
        {
            if (document.Components?.Schemas is { } all && all.TryGetValue(schema, out var s) && s is OpenApiSchema { Properties: { } props } && props.ContainsKey(property))
                // A plain reference, not oneOf [null, Quantity]: behind that wrapper Kiota loses Quantity's oneOf and makes
                // it an empty object. Leaving the field out is how a client says "none".
                props[property] = new OpenApiSchemaReference(ApiDocumentTransformer.QuantitySchema, document);
        }
        // Nothing else is an arbitrary JSON element; a new one will show up here again.
        if (!AnyReferenceTo(document, "JsonElement")) document.Components?.Schemas?.Remove("JsonElement");
    }

    /// <summary><c>GET /healthz</c>, as <c>BatchRunnerApp.HealthAsync</c> writes it; more fields may be added.</summary>
    public static OpenApiSchema Health() => new()
    {
        Type = JsonSchemaType.Object,
        Required = new HashSet<string> { "status", "role", "node", "database" },
        Properties = new Dictionary<string, IOpenApiSchema>
        {
            ["status"] = new OpenApiSchema { Type = JsonSchemaType.String, Enum = [JsonValue.Create("ok"), JsonValue.Create("degraded")] },
            ["role"] = new OpenApiSchema { Type = JsonSchemaType.String, Description = "all, api or worker" },
            ["node"] = new OpenApiSchema { Type = JsonSchemaType.String },
            ["database"] = new OpenApiSchema { Type = JsonSchemaType.String, Description = "\"ok\", or \"unavailable: why\"" },
            ["embedded"] = new OpenApiSchema { Type = JsonSchemaType.Object | JsonSchemaType.Null, Description = "the embedded PostgreSQL's supervision, when there is one" },
            ["runtime"] = new OpenApiSchema { Type = JsonSchemaType.Object | JsonSchemaType.Null, Description = "the OCI runtime of a worker node: name, version, selection" },
            ["gpus"] = new OpenApiSchema { Type = JsonSchemaType.Object | JsonSchemaType.Null, Description = "the GPUs of a worker node: count, source, devices" },
        },
    };

    /// <summary>
    /// The API reads numbers also from strings ("60"), so the generator describes every number as integer-or-string
    /// with a pattern; clients should send numbers and the API always writes numbers, so the document says number only
    /// (a generator would otherwise make a union type of every count).
    /// </summary>
    public static Task StrictNumbersAsync(OpenApiSchema schema, OpenApiSchemaTransformerContext context, CancellationToken ct)
    {
        if (schema.Type is { } type && (type & (JsonSchemaType.Integer | JsonSchemaType.Number)) != 0 && (type & JsonSchemaType.String) != 0)
        {
            schema.Type = type & ~JsonSchemaType.String;
            schema.Pattern = null;
        }
        return Task.CompletedTask;
    }

    private static OpenApiSchema Nullable(JsonSchemaType type, string? format = null) => new() { Type = type | JsonSchemaType.Null, Format = format };

    private static bool AnyReferenceTo(OpenApiDocument document, string id) =>
        System.Text.RegularExpressions.Regex.IsMatch(Serialize(document), $"\"#/components/schemas/{id}\"");

    private static string Serialize(OpenApiDocument document)
    {
        using var text = new StringWriter();
        document.SerializeAsV31(new OpenApiJsonWriter(text));
        return text.ToString();
    }
}
