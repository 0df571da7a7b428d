using BatchRunner.Server.Nodes;
using BatchRunner.Server.Storage;
using Microsoft.AspNetCore.Http.Features;

namespace BatchRunner.Server.Api;

/// <summary>
/// A job's logs and outputs stay in the data directory of the node that ran it (as Nomad keeps an
/// allocation's on its client). Every node serves its own under /internal/v1/jobs (node-to-node only:
/// <see cref="ClusterToken"/>), and the public API forwards a request for another node's job there
/// (<see cref="ForwardToNodeResult"/>), streaming the answer through, follow and ranges included.
/// </summary>
public static partial class NodeFilesApi
{
    public const string HttpClientName = NodeClient.HttpClientName;
    public const string Prefix = NodeClient.JobsPrefix;

    public static IEndpointRouteBuilder MapNodeFilesApi(this IEndpointRouteBuilder app)
    {
        var api = app.MapGroup(Prefix).ExcludeFromDescription();
        api.AddEndpointFilter(async (ctx, next) =>
        {
            var http = ctx.HttpContext;
            var token = http.RequestServices.GetRequiredService<ClusterToken>();
            // The target exactly as it came (the signer signed what it sent), not the decoded path.
            var target = http.Features.Get<IHttpRequestFeature>()?.RawTarget is { Length: > 0 } raw ? raw : http.Request.Path + http.Request.QueryString;
            var check = await token.CheckAsync(http.Request.Headers[ClusterToken.Header].FirstOrDefault(), http.Request.Method, target, http.RequestAborted);
            if (check == SignatureCheck.Valid)
            {
                RequestLog.SetKeyId(http, RequestLog.NodeKeyId);
                return await next(ctx);
            }
            return TypedResults.Problem(statusCode: StatusCodes.Status403Forbidden, title: "Forbidden",
                detail: $"node-to-node endpoint: {Describe(check)}");
        });
        api.MapGet("/{id}/logs", (string id, string? stream, bool? follow, bool? timestamps, bool? status, JobStore store, DataPaths paths, CancellationToken ct) =>
            JobsApi.ServeLogsAsync(id, stream, follow, timestamps, status, "", scope: null, store, paths, forwardFrom: null, ct));
        api.MapGet("/{id}/outputs/{**path}", (string id, string path, JobStore store, DataPaths paths, CancellationToken ct) =>
            JobsApi.ServeOutputAsync(id, path, scope: null, store, paths, forwardFrom: null, ct));
        api.MapGet("/{id}/" + OutputArchiveResult.ZipName, (string id, JobStore store, DataPaths paths, CancellationToken ct) =>
            JobsApi.ServeOutputArchiveAsync(id, OutputArchiveResult.Format.Zip, scope: null, store, paths, forwardFrom: null, ct));
        api.MapGet("/{id}/" + OutputArchiveResult.TarGzName, (string id, JobStore store, DataPaths paths, CancellationToken ct) =>
            JobsApi.ServeOutputArchiveAsync(id, OutputArchiveResult.Format.TarGz, scope: null, store, paths, forwardFrom: null, ct));
        // The node that runs a job fetches its inputs tar here; the node that took a deleted job's files removes them.
        // Signed node-to-node calls, for any tenant's job (scope null, as for logs and outputs above): the public API
        // checked the caller's tenant before it deleted the record or queued the job.
        api.MapGet("/{id}/inputs", ServeInputsAsync);
        api.MapDelete("/{id}/files", RemoveFilesAsync);
        return app;
    }

    private static string Describe(SignatureCheck check) => check switch
    {
        SignatureCheck.Missing => "no node signature",
        SignatureCheck.Expired => $"the node signature is older (or newer) than {RequestSignature.Validity.TotalSeconds:0} s: are the nodes' clocks in sync?",
        SignatureCheck.Replayed => "the node signature was used before",
        _ => "the node signature is not valid for this request",
    };

    /// <summary>The job's inputs tar, if this node took them (the node that runs the job checks its digest).</summary>
    private static async Task<IResult> ServeInputsAsync(string id, JobStore store, InputsStore inputs, CancellationToken ct)
    {
        var job = Guid.TryParse(id, out var jobId) ? await store.GetAsync(jobId, tenant: null, ct) : null;
        if (job?.InputsTar is not { } i)
            return TypedResults.Problem(statusCode: 404, title: "No inputs", detail: $"job {id} does not exist or has no inputs");
        if (inputs.PathOf(i.Digest) is not { } path)
            return TypedResults.Problem(statusCode: 404, title: "Inputs not here", detail: $"this node does not hold the inputs {i.Digest} of job {id}");
        return TypedResults.PhysicalFile(path, "application/x-tar", enableRangeProcessing: false);
    }

    /// <summary>Removes what this node holds of a deleted job (204 also when it owes nothing: the removal is idempotent).</summary>
    private static async Task<IResult> RemoveFilesAsync(string id, JobFiles files, CancellationToken ct)
    {
        if (!Guid.TryParse(id, out var jobId))
            return TypedResults.Problem(statusCode: 404, title: "Job not found", detail: $"no job with id \"{id}\"");
        await files.RemoveOwedAsync(jobId, ct);
        return TypedResults.NoContent();
    }

    /// <summary>
    /// Asks <paramref name="holder"/> to remove what it holds of the deleted job <paramref name="jobId"/>. A node that
    /// cannot be reached, or fails, keeps its row in batchrunner.file_removals and removes the files at its next sweep.
    /// </summary>
    public static async Task ForwardRemovalAsync(NodeClient nodes, string holder, string? knownUrl, Guid jobId, ILogger log)
    {
        using var cts = new CancellationTokenSource(RemovalTimeout);
        try
        {
            if (await nodes.ResolveAsync(holder, knownUrl, cts.Token) is not ({ } url, _))
            {
                LogRemovalDeferred(log, jobId, holder, "its address is not known");
                return;
            }
            using var response = await nodes.SendAsync(HttpMethod.Delete, url, $"{Prefix}/{jobId}/files", cts.Token);
            if (!response.IsSuccessStatusCode) LogRemovalDeferred(log, jobId, holder, $"it answered {(int)response.StatusCode}");
        }
        catch (Exception e) when (e is HttpRequestException or OperationCanceledException)
        {
            LogRemovalDeferred(log, jobId, holder, e.Message);
        }
    }

    private static readonly TimeSpan RemovalTimeout = TimeSpan.FromSeconds(10);

    [LoggerMessage(Level = LogLevel.Information, Message = "Job {JobId}: node {Node} removes the deleted job's files at its next sweep ({Reason})")]
    private static partial void LogRemovalDeferred(ILogger log, Guid jobId, string node, string reason);

    /// <summary>True when the job's current attempt belongs to another node, which holds its files.</summary>
    public static bool RanElsewhere(JobRecord job, NodeIdentity node) => job.Node is { } n && n != node.Name;
}

/// <summary>Forwards this request to the same job path on the node that ran the job and streams the answer back.</summary>
public sealed class ForwardToNodeResult(string nodeName, string pathAndQuery) : IResult
{
    private static readonly string[] CopiedHeaders =
        ["Content-Type", "Content-Length", "Content-Disposition", "Content-Range", "Accept-Ranges", "Cache-Control", "ETag", "Last-Modified", "X-Accel-Buffering"];

    public async Task ExecuteAsync(HttpContext http)
    {
        var client = http.RequestServices.GetRequiredService<NodeClient>();
        var ct = http.RequestAborted;
        if (await client.ResolveAsync(nodeName, null, ct) is not ({ } url, var alive))
        {
            await Problem(http, 502, $"the job's files are on node \"{nodeName}\", whose address is not known (yet); it records it with its heartbeat");
            return;
        }
        HttpResponseMessage response;
        try
        {
            response = await client.SendAsync(HttpMethod.Get, url, pathAndQuery, ct, request =>
            {
                foreach (var h in new[] { "Range", "If-Range", "If-None-Match", "If-Modified-Since" })
                    if (http.Request.Headers.TryGetValue(h, out var v)) request.Headers.TryAddWithoutValidation(h, v.ToArray());
            });
        }
        catch (HttpRequestException e)
        {
            await Problem(http, alive != false ? 502 : 503, $"the job's files are on node \"{nodeName}\" ({url}), which is {(alive != false ? "unreachable" : "down")}: {e.Message}");
            return;
        }
        using (response)
        {
            http.Response.StatusCode = (int)response.StatusCode;
            foreach (var name in CopiedHeaders)
            {
                if (response.Headers.TryGetValues(name, out var values) || response.Content.Headers.TryGetValues(name, out values))
                    http.Response.Headers[name] = values.ToArray();
            }
            await using var body = await response.Content.ReadAsStreamAsync(ct);
            await body.CopyToAsync(http.Response.Body, ct);
        }
    }

    private static Task Problem(HttpContext http, int status, string detail) =>
        TypedResults.Problem(statusCode: status, title: "Job files unavailable", detail: detail).ExecuteAsync(http);
}
