namespace BatchRunner.Server.Api.OpenApi;

/// <summary>
/// The error answers of every operation of the public API, one line per operation, keyed as the OpenAPI document
/// names it (<c>METHOD /path/{param}</c>). <see cref="ApiDocumentTransformer"/> turns each into a response with an
/// <c>application/problem+json</c> body; success answers come from the handlers' typed results.
/// </summary>
/// <remarks>
/// Guarantees, checked by <c>OpenApiDocumentFacts</c>: every endpoint the app maps (except those excluded from the
/// description) is a line here and an operation in the document, and every line is an operation; a line listing 401
/// is refused without the key, one that does not list it is not; a line listing 404 answers 404 for an unknown id.
/// The other codes are the handlers' own (the <c>TypedResults.Problem</c> calls named below).
/// <para>Not listed, because no operation answers them as its contract: 500 (a bug; problem+json all the same).
/// 401 is added to every operation except <see cref="Anonymous"/> ones (the API key filter of the route groups).</para>
/// </remarks>
public static class ApiResponses
{
    /// <summary>Operations that need no key: the document gives them an empty security requirement.</summary>
    public static readonly IReadOnlySet<string> Anonymous = new HashSet<string> { "GET /healthz", "GET /metrics" };

    /// <summary>The database being away (<c>DatabaseErrors.IsOutage</c>, mapped by the exception handler).</summary>
    private const string Outage = "the job database is unavailable (try again after Retry-After seconds); nothing was changed";
    private const string NoJob = "no job with this id";
    private const string NoImage = "no image of this name on this node";
    private const string ForwardFailed = "the job ran on another node, whose files cannot be reached now (502: unreachable, 503: down)";

    /// <summary>Status code → why this operation answers it. 400s are validation problems naming each field (<c>errors</c>).</summary>
    public static readonly IReadOnlyDictionary<string, IReadOnlyDictionary<int, string>> Errors = new Dictionary<string, IReadOnlyDictionary<int, string>>
    {
        ["POST /api/v1/jobs"] = Map(
            (400, "the spec or its inputs are invalid, the node's policy refuses it, or no live node could ever run the job"),
            (409, "the Idempotency-Key was used before with a different job spec"),
            (413, "the multipart inputs exceed the node's MaxInputBytes; nothing was stored"),
            (503, Outage)),
        ["GET /api/v1/jobs"] = Map((400, "unknown state, limit out of range or invalid cursor"), (503, Outage)),
        ["GET /api/v1/jobs/{id}"] = Map((404, NoJob), (503, Outage)),
        ["POST /api/v1/jobs/{id}/cancel"] = Map((404, NoJob), (409, "the job has already ended"), (503, Outage)),
        ["GET /api/v1/jobs/{id}/logs"] = Map((400, "stream is not stdout or stderr"), (404, NoJob), (502, ForwardFailed), (503, Outage + "; or " + ForwardFailed)),
        ["GET /api/v1/jobs/{id}/outputs"] = Map((404, NoJob), (503, Outage)),
        ["GET /api/v1/jobs/{id}/outputs/{path}"] = Map((404, "no job with this id, or it has no such output file"), (502, ForwardFailed), (503, Outage + "; or " + ForwardFailed)),
        ["GET /api/v1/nodes"] = Map((503, Outage)),
        ["POST /api/v1/images"] = Map((400, "name missing or invalid, no file part, or the archive cannot be imported"), (415, "the body is neither an archive nor multipart/form-data")),
        ["GET /api/v1/images"] = Map(),
        ["DELETE /api/v1/images/{name}"] = Map((400, "invalid image name"), (404, NoImage), (409, "a queued or running job uses the image"), (503, Outage)),
        ["GET /healthz"] = Map(),
        ["GET /metrics"] = Map(),
    };

    private static Dictionary<int, string> Map(params (int Status, string Why)[] answers) => answers.ToDictionary(a => a.Status, a => a.Why);
}
