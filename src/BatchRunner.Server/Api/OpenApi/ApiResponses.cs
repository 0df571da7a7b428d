namespace BatchRunner.Server.Api.OpenApi;

/// <summary>
/// The error answers each operation of the public API gives from its own code, one line per operation, keyed as the
/// OpenAPI document names it (<c>METHOD /path/{param}</c>). <see cref="ApiDocumentTransformer"/> turns each into a
/// response with an <c>application/problem+json</c> body. A new endpoint needs its line here (OpenApiDocumentFacts
/// fails until it has one).
/// </summary>
/// <remarks>
/// Not here: what the authorization policy answers (401, 403 by role, 429, 503; <see cref="AuthResponses"/> reads
/// those from the endpoint), the 400 of the query check (<see cref="QueryResponses"/>, every operation) and the
/// success answers (the handlers' typed results; <see cref="Bodies"/> for those the handlers write themselves). Not listed anywhere: 500, a bug
/// (problem+json all the same). Checked by <c>OpenApiDocumentFacts</c>: the lines and the app's endpoints are the
/// same set, and a line listing 404 answers 404 for an unknown id or name.
/// </remarks>
public static class ApiResponses
{
    /// <summary>The database being away (<c>DatabaseErrors.IsOutage</c>, answered by the exception handler).</summary>
    internal const string Outage = "the job database is unavailable (try again after Retry-After seconds); nothing was changed";
    private const string NoJob = "no job with this id (in the key's tenant)";
    private const string ForwardFailed = "the job ran on another node, whose files cannot be reached now (502: unreachable, 503: down)";
    private const string TooLarge = "the JSON body is over 1 MiB";
    private const string NoSchedule = "no schedule with this id (in the key's tenant)";

    /// <summary>Status code → why this operation answers it. 400s are validation problems naming each field (<c>errors</c>).</summary>
    public static readonly IReadOnlyDictionary<string, IReadOnlyDictionary<int, string>> Errors = new Dictionary<string, IReadOnlyDictionary<int, string>>
    {
        ["POST /api/v1/jobs"] = Map(
            (400, "the spec or its inputs are invalid, the node's policy refuses it, or no live node could ever run the job"),
            (409, "the Idempotency-Key was used before with a different job spec"),
            (429, "the tenant has its maxQueuedJobs queued (quota), or the key's role is past its rate limit"),
            (413, TooLarge + ", or the multipart inputs exceed the node's MaxInputBytes; nothing was stored")),
        ["GET /api/v1/jobs"] = Map((400, "unknown state, limit out of range or invalid cursor"), (403, "tenant names another tenant and the key is not an admin's")),
        ["GET /api/v1/jobs/{id}"] = Map((400, "waitSeconds is not between 0 and 60, or whileState is unknown or given without waitSeconds"), (404, NoJob),
            (429, "with waitSeconds: this server process already holds 10,000 waiting requests (Retry-After); or the key's role is past its rate limit")),
        ["GET /api/v1/jobs/{id}/children"] = Map((400, "unknown state, limit out of range or invalid cursor"), (404, NoJob + ", or the job is not an array")),
        ["POST /api/v1/jobs/{id}/cancel"] = Map((404, NoJob), (409, "the job has already ended")),
        ["GET /api/v1/jobs/{id}/logs"] = Map((400, "stream is not stdout, stderr or combined, or timestamps without a stream"), (404, NoJob),
            (502, ForwardFailed), (503, ApiResponses.Outage + "; or " + ForwardFailed)),
        ["POST /api/v1/jobs/{id}/rerun"] = Map((404, NoJob),
            (409, "the job has not ended, its image was never resolved, its queue or inputs are gone, or no live node can run it now")),
        ["DELETE /api/v1/jobs/{id}"] = Map((404, NoJob), (409, "the job has not ended (queued, starting or running: cancel it first)")),
        ["GET /api/v1/jobs/{id}/outputs"] = Map((404, NoJob)),
        ["GET /api/v1/jobs/{id}/outputs.zip"] = Map((404, "no job with this id (in the key's tenant), or one of its outputs is gone"),
            (409, "the job has not ended"), (502, ForwardFailed), (503, ApiResponses.Outage + "; or " + ForwardFailed)),
        ["GET /api/v1/jobs/{id}/outputs.tar.gz"] = Map((404, "no job with this id (in the key's tenant), or one of its outputs is gone"),
            (409, "the job has not ended"), (502, ForwardFailed), (503, ApiResponses.Outage + "; or " + ForwardFailed)),
        ["GET /api/v1/jobs/{id}/outputs/{path}"] = Map((404, "no job with this id (in the key's tenant), or it has no such output file"),
            (502, ForwardFailed), (503, ApiResponses.Outage + "; or " + ForwardFailed)),
        ["POST /api/v1/schedules"] = Map((400, "name, cron, timeZone, concurrency or the job (its fields under job.) are invalid, or the job names jobs not found in the key's tenant"), (413, TooLarge)),
        ["GET /api/v1/schedules"] = Map(),
        ["GET /api/v1/schedules/{id}"] = Map((404, NoSchedule)),
        ["PATCH /api/v1/schedules/{id}"] = Map((400, "a field given is invalid (as for POST)"), (404, NoSchedule), (413, TooLarge)),
        ["DELETE /api/v1/schedules/{id}"] = Map((404, NoSchedule)),
        ["POST /api/v1/schedules/{id}/trigger"] = Map((404, NoSchedule), (409, "concurrency forbid: the previous run is still going (the skip is recorded)")),
        ["GET /api/v1/nodes"] = Map(),
        ["POST /api/v1/images"] = Map((400, "name missing or invalid, no file part, or the archive cannot be imported"), (415, "the body is neither an archive nor multipart/form-data")),
        ["GET /api/v1/images"] = Map(),
        ["DELETE /api/v1/images/{name}"] = Map((400, "invalid image name"), (404, "no image of this name on this node"), (409, "a queued or running job uses the image")),
        ["POST /api/v1/apikeys"] = Map((400, "name, tenant or role invalid"), (413, TooLarge)),
        ["GET /api/v1/apikeys"] = Map(),
        ["DELETE /api/v1/apikeys/{id}"] = Map((404, "no active API key with this id"), (409, "the bootstrap key is configured, not stored: it cannot be revoked here")),
        ["GET /api/v1/tenants"] = Map(),
        ["PUT /api/v1/tenants/{name}"] = Map((400, "invalid name, maxQueuedJobs, maxRunning or weight"), (413, TooLarge)),
        ["GET /healthz"] = Map(),
        ["GET /metrics"] = Map(),
    };

    private static Dictionary<int, string> Map(params (int Status, string Why)[] answers) => answers.ToDictionary(a => a.Status, a => a.Why);
}
