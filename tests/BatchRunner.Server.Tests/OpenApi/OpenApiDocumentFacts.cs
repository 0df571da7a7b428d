using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using System.Text.RegularExpressions;
using BatchRunner.Server.Api.OpenApi;
using BatchRunner.Testing;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.OpenApi;
using Microsoft.OpenApi.Reader;

namespace BatchRunner.Server.Tests.OpenApi;

/// <summary>
/// <c>/openapi/v1.json</c> against the running server: valid OpenAPI 3.1, the API key as bearer auth, and
/// <see cref="ApiResponses"/> true to the app: every endpoint is an operation and a line of the table, every line an
/// operation, and the 401s, 403s and 404s the document claims are what the server answers.
/// </summary>
[Collection(ServerCollection.Name)]
public sealed partial class OpenApiDocumentFacts(ServerFixture f)
{
    /// <summary>Mapped endpoints that are not operations of the public API, and why.</summary>
    private static readonly Dictionary<string, string> NotInTheDocument = new()
    {
        ["GET /openapi/{documentName}.json"] = "the document itself",
    };

    [Fact]
    public async Task Document_IsValidOpenApi31()
    {
        var json = await f.Anonymous.GetStringAsync("/openapi/v1.json");
        var read = OpenApiDocument.Parse(json, "json", new OpenApiReaderSettings());
        Assert.Empty(read.Diagnostic?.Errors ?? []);
        Assert.Equal(OpenApiSpecVersion.OpenApi3_1, read.Diagnostic!.SpecificationVersion);
        var errors = read.Document!.Validate(Microsoft.OpenApi.ValidationRuleSet.GetDefaultRuleSet())?.ToList() ?? [];
        Assert.True(errors.Count == 0, string.Join("\n", errors.Select(e => $"{e.Pointer}: {e.Message}")));
        var root = JsonDocument.Parse(json).RootElement;
        Assert.StartsWith("3.1", root.GetProperty("openapi").GetString());
        // Every field has a real schema: the spec's JsonElements are sizes (Quantity), none is "any JSON value".
        Assert.False(root.GetProperty("components").GetProperty("schemas").TryGetProperty("JsonElement", out _));
        Assert.Contains("#/components/schemas/Quantity", root.GetProperty("components").GetProperty("schemas").GetProperty("ResourceSubmission").GetRawText());
    }

    [Fact]
    public async Task Document_DeclaresBearerAuthGlobally_ExceptForHealthAndMetrics()
    {
        var doc = await DocumentAsync();
        var scheme = doc.GetProperty("components").GetProperty("securitySchemes").GetProperty("bearer");
        Assert.Equal("http", scheme.GetProperty("type").GetString());
        Assert.Equal("bearer", scheme.GetProperty("scheme").GetString());
        Assert.Contains("Basic", scheme.GetProperty("description").GetString());
        Assert.True(doc.GetProperty("security")[0].TryGetProperty("bearer", out _));
        var anonymous = Operations(doc).Where(o => o.Operation.TryGetProperty("security", out var s) && s.GetArrayLength() == 0).Select(o => o.Key);
        Assert.Equal(["GET /healthz", "GET /metrics"], anonymous.Order());
        foreach (var (key, op) in Operations(doc))
            Assert.True(anonymous.Contains(key) != op.GetProperty("responses").TryGetProperty("401", out _), $"{key}: 401 listed iff a key is needed");
    }

    [Fact]
    public async Task EveryEndpoint_IsAnOperationAndATableLine_AndEveryLineAnOperation()
    {
        var operations = Operations(await DocumentAsync()).Select(o => o.Key).ToHashSet();
        var endpoints = f.App.Services.GetRequiredService<EndpointDataSource>().Endpoints.OfType<RouteEndpoint>()
            .Where(e => e.Metadata.GetMetadata<Microsoft.AspNetCore.Routing.IExcludeFromDescriptionMetadata>() is not { ExcludeFromDescription: true })
            .SelectMany(KeysOf).Where(k => !NotInTheDocument.ContainsKey(k)).ToHashSet();
        Assert.Contains("POST /api/v1/jobs", endpoints); // the walk sees what it looks for

        Assert.Empty(endpoints.Except(operations).Order());
        Assert.Empty(endpoints.Except(ApiResponses.Errors.Keys).Order());
        Assert.Empty(ApiResponses.Errors.Keys.Except(operations).Order());
        Assert.Empty(operations.Except(ApiResponses.Errors.Keys).Order());
    }

    [Fact]
    public async Task EveryErrorResponse_IsProblemJson_AndEverySuccessHasABody()
    {
        var doc = await DocumentAsync();
        foreach (var (key, op) in Operations(doc))
        {
            foreach (var r in op.GetProperty("responses").EnumerateObject())
            {
                var code = int.Parse(r.Name);
                var hasContent = r.Value.TryGetProperty("content", out var content);
                if (code is >= 400 and not 416 && !(key == "GET /healthz" && code == 503))
                {
                    var problem = default(JsonElement);
                    Assert.True(hasContent && content.TryGetProperty("application/problem+json", out problem), $"{key} {code}: not problem+json");
                    var schema = problem.GetProperty("schema").GetProperty("$ref").GetString();
                    Assert.True(schema is "#/components/schemas/ProblemDetails" or "#/components/schemas/HttpValidationProblemDetails", $"{key} {code}: {schema}");
                }
                else if (code is >= 200 and < 300 and not 204)
                    Assert.True(hasContent && content.EnumerateObject().All(m => m.Value.TryGetProperty("schema", out _)), $"{key} {code}: no body schema");
            }
            Assert.True(op.GetProperty("responses").EnumerateObject().Any(r => r.Name.StartsWith('2')), $"{key}: no success response");
            if (ApiResponses.Errors.TryGetValue(key, out var errors))
                foreach (var code in errors.Keys)
                    Assert.True(op.GetProperty("responses").TryGetProperty(code.ToString(), out _), $"{key}: {code} from the table is missing");
        }
    }

    [Fact]
    public async Task SubmitJob_DescribesTheMultipartForm_AsASpecPartPlusFileParts()
    {
        var body = Operations(await DocumentAsync()).Single(o => o.Key == "POST /api/v1/jobs").Operation.GetProperty("requestBody").GetProperty("content");
        Assert.Equal("#/components/schemas/JobSubmission", body.GetProperty("application/json").GetProperty("schema").GetProperty("$ref").GetString());
        var form = body.GetProperty("multipart/form-data");
        var parts = form.GetProperty("schema").GetProperty("properties");
        Assert.Equal("#/components/schemas/JobSubmission", parts.GetProperty("spec").GetProperty("$ref").GetString());
        Assert.Equal("application/json", form.GetProperty("encoding").GetProperty("spec").GetProperty("contentType").GetString());
        Assert.Contains("spec", form.GetProperty("schema").GetProperty("required").EnumerateArray().Select(e => e.GetString()));
        foreach (var files in new[] { "file", "archive" })
            Assert.Equal("binary", parts.GetProperty(files).GetProperty("items").GetProperty("format").GetString());
    }

    [Fact]
    public async Task Operations_ListingNoKeyNeeded_AnswerWithoutTheKey_AndTheOthers401()
    {
        foreach (var (key, op) in Operations(await DocumentAsync()))
        {
            var (method, path) = Split(key);
            using var response = await f.Anonymous.SendAsync(new HttpRequestMessage(new HttpMethod(method), Fill(path)));
            var expects401 = op.GetProperty("responses").TryGetProperty("401", out _);
            Assert.True(expects401 == (response.StatusCode == HttpStatusCode.Unauthorized), $"{key} without the key: {(int)response.StatusCode}");
            if (expects401) Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        }
    }

    [Fact]
    public async Task Operations_Listing400_RefuseAnUnknownQueryParameter()
    {
        foreach (var (key, op) in Operations(await DocumentAsync()))
        {
            var (method, path) = Split(key);
            using var response = await f.Client.SendAsync(new HttpRequestMessage(new HttpMethod(method), Fill(path) + "?noSuchParameter=1"));
            var lists400 = op.GetProperty("responses").TryGetProperty("400", out _);
            Assert.True(lists400 == (response.StatusCode == HttpStatusCode.BadRequest), $"{key}?noSuchParameter=1: {(int)response.StatusCode}");
        }
    }

    [Fact]
    public async Task Operations_Listing404_Answer404_ForAnUnknownIdOrName()
    {
        var checkedAny = false;
        foreach (var (key, op) in Operations(await DocumentAsync()))
        {
            if (!op.GetProperty("responses").TryGetProperty("404", out _)) continue;
            var (method, path) = Split(key);
            using var response = await f.Client.SendAsync(new HttpRequestMessage(new HttpMethod(method), Fill(path)));
            Assert.True(response.StatusCode == HttpStatusCode.NotFound, $"{key}: {(int)response.StatusCode}");
            Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
            checkedAny = true;
        }
        Assert.True(checkedAny);
    }

    [Fact]
    public async Task Operations_Listing403_RefuseAViewerKey_AndTheOthersDoNot()
    {
        var created = await f.Client.PostAsJsonAsync("/api/v1/apikeys", new { name = "openapi-facts viewer", tenant = "openapi-facts", role = "viewer" });
        var key = JsonDocument.Parse(await created.Content.ReadAsStringAsync()).RootElement;
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        try
        {
            using var viewer = new BatchRunnerClient(f.Anonymous.BaseAddress!.ToString(), key.GetProperty("key").GetString());
            var refused = new List<string>();
            foreach (var (key403, op) in Operations(await DocumentAsync()))
            {
                if (ApiResponses.Errors.GetValueOrDefault(key403)?.ContainsKey(403) == true) continue; // the handler's own 403, not the role's
                var (method, path) = Split(key403);
                using var response = await viewer.Http.SendAsync(new HttpRequestMessage(new HttpMethod(method), Fill(path)));
                var lists403 = op.GetProperty("responses").TryGetProperty("403", out _);
                Assert.True(lists403 == (response.StatusCode == HttpStatusCode.Forbidden), $"{key403} with a viewer key: {(int)response.StatusCode}");
                if (lists403) refused.Add(key403);
            }
            Assert.Contains("POST /api/v1/jobs", refused);
            Assert.Contains("GET /api/v1/apikeys", refused);
        }
        finally
        {
            Assert.Equal(HttpStatusCode.NoContent, (await f.Client.DeleteAsync($"/api/v1/apikeys/{key.GetProperty("id").GetString()}")).StatusCode);
        }
    }

    private async Task<JsonElement> DocumentAsync() => JsonDocument.Parse(await f.Anonymous.GetStringAsync("/openapi/v1.json")).RootElement.Clone();

    /// <summary>Every operation as "METHOD /path".</summary>
    private static IEnumerable<(string Key, JsonElement Operation)> Operations(JsonElement doc) =>
        from path in doc.GetProperty("paths").EnumerateObject()
        from op in path.Value.EnumerateObject()
        where op.Name is "get" or "put" or "post" or "delete" or "patch" or "head" or "options"
        select ($"{op.Name.ToUpperInvariant()} {path.Name}", op.Value);

    /// <summary>An endpoint's keys as the document names its operations: parameters without constraints or catch-all
    /// stars, no trailing slash.</summary>
    private static IEnumerable<string> KeysOf(RouteEndpoint e)
    {
        var path = Parameter().Replace("/" + e.RoutePattern.RawText!.Trim('/'), "{$1}");
        var methods = e.Metadata.GetMetadata<Microsoft.AspNetCore.Routing.HttpMethodMetadata>()?.HttpMethods ?? ["GET"];
        return methods.Select(m => $"{m} {path}");
    }

    private static (string Method, string Path) Split(string key) => (key[..key.IndexOf(' ')], key[(key.IndexOf(' ') + 1)..]);

    /// <summary>The path with every parameter an id or name that does not exist.</summary>
    private static string Fill(string path) => Parameter().Replace(path, m => m.Groups[1].Value switch
    {
        "name" => $"no-such-image-{Guid.NewGuid():N}:1",
        "path" => "no/such/file",
        _ => Guid.NewGuid().ToString(),
    });

    [GeneratedRegex(@"\{\**([^}:=?]+)[^}]*\}")]
    private static partial Regex Parameter();
}
