using Microsoft.OpenApi;

namespace BatchRunner.Server.Api.OpenApi;

/// <summary>Request and response bodies that handlers read or write themselves, described as they are.</summary>
internal static class Bodies
{
    /// <summary>
    /// <c>POST /api/v1/jobs</c> takes the spec as JSON, or a multipart form read by <see cref="JobSubmissionReader"/>:
    /// a <c>spec</c> part holding the same JSON, <c>file</c> parts stored under /inputs by their file names (any other
    /// part name with a file name works the same), and <c>archive</c> parts unpacked there.
    /// </summary>
    public static void JobSubmission(OpenApiOperation operation, OpenApiDocument document)
    {
        var spec = new OpenApiSchemaReference("JobSubmission", document);
        var binary = new OpenApiSchema { Type = JsonSchemaType.String, Format = "binary" };
        operation.RequestBody = new OpenApiRequestBody
        {
            Required = true,
            Description = "The job spec as JSON; or, with input files, multipart/form-data with the spec as its \"spec\" part.",
            Content = new Dictionary<string, OpenApiMediaType>
            {
                ["application/json"] = new() { Schema = spec },
                ["multipart/form-data"] = new()
                {
                    Schema = new OpenApiSchema
                    {
                        Type = JsonSchemaType.Object,
                        Required = new HashSet<string> { JobSubmissionReader.SpecPart },
                        Properties = new Dictionary<string, IOpenApiSchema>
                        {
                            [JobSubmissionReader.SpecPart] = spec,
                            ["file"] = new OpenApiSchema
                            {
                                Type = JsonSchemaType.Array,
                                Items = binary,
                                Description = "Input files, read-only under /inputs by their file names (any part name other than " +
                                              "spec and archive that has a file name is stored the same way).",
                            },
                            [JobSubmissionReader.ArchivePart] = new OpenApiSchema
                            {
                                Type = JsonSchemaType.Array,
                                Items = binary,
                                Description = "Archives (zip, tar, tar.gz, tar.xz, 7z; detected from the content) unpacked under /inputs.",
                            },
                        },
                    },
                    Encoding = new Dictionary<string, OpenApiEncoding>
                    {
                        [JobSubmissionReader.SpecPart] = new() { ContentType = "application/json" },
                        ["file"] = new() { ContentType = "application/octet-stream" },
                        [JobSubmissionReader.ArchivePart] = new() { ContentType = "application/octet-stream" },
                    },
                },
            },
        };
        Header(operation, "201", "Location", "the job's URL");
    }

    /// <summary><c>LogStreamResult</c>: plain text, stdout then stderr; with follow=true, streamed until the job ends.</summary>
    public static void Logs(OpenApiOperation operation) =>
        Success(operation, "200", "The log text (streamed until the job ends with follow=true)", "text/plain", new OpenApiSchema { Type = JsonSchemaType.String });

    /// <summary>An output file, served with range support.</summary>
    public static void OutputFile(OpenApiOperation operation)
    {
        var binary = new OpenApiSchema { Type = JsonSchemaType.String, Format = "binary" };
        Success(operation, "200", "The file", "application/octet-stream", binary);
        Success(operation, "206", "The requested range of the file (Range header)", "application/octet-stream", binary);
        operation.Responses!["416"] = new OpenApiResponse { Description = "the Range is outside the file" };
    }

    /// <summary>
    /// <c>GET /api/v1/jobs</c> answers <c>JobListDto</c>, or with <c>view=summary</c> <c>JobSummaryListDto</c> (fewer
    /// fields: no command and no outputs). Two typed 200s leave the generator with the last; the document names the
    /// default, which a client can read either answer into.
    /// </summary>
    public static void JobList(OpenApiOperation operation, OpenApiDocument document) =>
        Success(operation, "200", "The jobs, newest first (view=summary: without command and outputs)", "application/json",
            new OpenApiSchemaReference("JobListDto", document));

    /// <summary>All the job's outputs as one archive (<c>OutputArchiveResult</c>), streamed.</summary>
    public static void OutputArchive(OpenApiOperation operation, string mediaType) =>
        Success(operation, "200", "The job's outputs as one archive", mediaType, new OpenApiSchema { Type = JsonSchemaType.String, Format = "binary" });

    /// <summary><c>GET /healthz</c>: the same body with 200 (ok) or 503 (the database does not answer).</summary>
    public static void Health(OpenApiOperation operation, OpenApiDocument document)
    {
        operation.OperationId ??= "GetHealth";
        operation.Summary ??= "Health of this node; needs no key";
        var health = new OpenApiSchemaReference(ApiDocumentTransformer.HealthSchema, document);
        Success(operation, "200", "The node and its database are working", "application/json", health);
        Success(operation, "503", "The database does not answer (status: degraded)", "application/json", health);
    }

    private static void Success(OpenApiOperation operation, string code, string description, string mediaType, IOpenApiSchema schema)
    {
        operation.Responses ??= [];
        operation.Responses[code] = new OpenApiResponse
        {
            Description = description,
            Content = new Dictionary<string, OpenApiMediaType> { [mediaType] = new() { Schema = schema } },
        };
    }

    private static void Header(OpenApiOperation operation, string code, string name, string description)
    {
        if (operation.Responses is { } responses && responses.TryGetValue(code, out var found) && found is OpenApiResponse r)
        {
            r.Headers ??= new Dictionary<string, IOpenApiHeader>();
            r.Headers[name] = new OpenApiHeader { Description = description, Schema = new OpenApiSchema { Type = JsonSchemaType.String } };
        }
    }
}
