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
public static class NodeFilesApi
{
    public const string HttpClientName = "node-files";
    public const string Prefix = "/internal/v1/jobs";

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
        api.MapGet("/{id}/logs", (string id, string? stream, bool? follow, JobStore store, DataPaths paths, CancellationToken ct) =>
            JobsApi.ServeLogsAsync(id, stream, follow, "", store, paths, forwardFrom: null, ct));
        api.MapGet("/{id}/outputs/{**path}", (string id, string path, JobStore store, DataPaths paths, CancellationToken ct) =>
            JobsApi.ServeOutputAsync(id, path, store, paths, forwardFrom: null, ct));
        return app;
    }

    private static string Describe(SignatureCheck check) => check switch
    {
        SignatureCheck.Missing => "no node signature",
        SignatureCheck.Expired => $"the node signature is older (or newer) than {RequestSignature.Validity.TotalSeconds:0} s: are the nodes' clocks in sync?",
        SignatureCheck.Replayed => "the node signature was used before",
        _ => "the node signature is not valid for this request",
    };

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
        var sp = http.RequestServices;
        var ct = http.RequestAborted;
        var target = await sp.GetRequiredService<NodeStore>().GetApiUrlAsync(nodeName, ct);
        if (target is not { ApiUrl: { } url } t)
        {
            await Problem(http, 502, $"the job's files are on node \"{nodeName}\", whose address is not known (yet); it records it with its heartbeat");
            return;
        }
        using var request = new HttpRequestMessage(HttpMethod.Get, url + pathAndQuery);
        // Signed for exactly the target HttpClient sends (Uri may re-escape what it was given).
        request.Headers.TryAddWithoutValidation(ClusterToken.Header,
            await sp.GetRequiredService<ClusterToken>().SignAsync(request.Method.Method, request.RequestUri!.PathAndQuery, ct));
        foreach (var h in new[] { "Range", "If-Range", "If-None-Match", "If-Modified-Since" })
            if (http.Request.Headers.TryGetValue(h, out var v)) request.Headers.TryAddWithoutValidation(h, v.ToArray());
        HttpResponseMessage response;
        try
        {
            var client = sp.GetRequiredService<IHttpClientFactory>().CreateClient(NodeFilesApi.HttpClientName);
            response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, ct);
        }
        catch (HttpRequestException e)
        {
            await Problem(http, t.Alive ? 502 : 503, $"the job's files are on node \"{nodeName}\" ({url}), which is {(t.Alive ? "unreachable" : "down")}: {e.Message}");
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
