using BatchRunner.Oci;
using BatchRunner.Oci.Import;
using BatchRunner.Oci.Store;
using BatchRunner.Server.Storage;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Mvc;
using Microsoft.AspNetCore.WebUtilities;
using Microsoft.Net.Http.Headers;

namespace BatchRunner.Server.Api;

/// <summary>An image in the node's store as the HTTP API v1 shows it. A public contract: extend, never rename.</summary>
/// <param name="SizeBytes">Blobs and unpacked layers the image needs; layers shared with other images are counted in each.</param>
public sealed record ImageDto(string Name, string Digest, long SizeBytes, DateTime LastUsed)
{
    public static ImageDto From(CachedImage image) => new(image.Name, image.ManifestDigest, image.SizeBytes, image.LastUsedUtc);
}

/// <summary>
/// HTTP API v1 for the node's image store: import an archive for air-gapped hosts, list, delete.
/// A public contract: extend it, never rename or remove paths or fields.
/// </summary>
public static class ImagesApi
{
    private static readonly HashSet<string> ArchiveContentTypes = new(StringComparer.OrdinalIgnoreCase)
    {
        "application/octet-stream", "application/x-tar", "application/tar", "application/gzip", "application/x-gzip",
        "application/zstd", "application/vnd.oci.image.layout.v1+tar",
    };

    public static RouteGroupBuilder MapImagesApiV1(this IEndpointRouteBuilder app)
    {
        // Admins only, listing included: the cache is shared by every tenant, and image names (a private
        // registry's paths) are a tenant's business.
        var api = app.MapGroup("/api/v1/images").WithTags("Images").RequireAuthorization(Auth.Policies.Admin);
        api.MapPost("/", ImportAsync).WithName("ImportImage")
            .Accepts<byte[]>("application/octet-stream", "application/x-tar", "multipart/form-data");
        api.MapGet("/", List).WithName("ListImages");
        api.MapDelete("/{**name}", DeleteAsync).WithName("DeleteImage");
        return api;
    }

    /// <summary>
    /// <c>POST /api/v1/images?name=NAME</c> with the archive as the body (tar, tar.gz or tar.zst of an OCI layout or
    /// docker save), or as the <c>file</c> part of a multipart form. Streamed: the archive is never held in memory.
    /// </summary>
    public static async Task<Results<Created<ImageDto>, ValidationProblem, ProblemHttpResult>> ImportAsync(
        HttpRequest request, [FromQuery] string? name, ImageStore store, CancellationToken ct)
    {
        if (string.IsNullOrWhiteSpace(name))
            return TypedResults.ValidationProblem(
                new Dictionary<string, string[]> { ["name"] = ["name is required: the reference to register the image as (e.g. myorg/tool:1)"] },
                title: "The import request is invalid");
        if (!ImageReference.TryParse(name, out var reference, out var nameError))
            return TypedResults.ValidationProblem(new Dictionary<string, string[]> { ["name"] = [nameError] }, title: "The import request is invalid");

        // Image archives are far beyond Kestrel's 30 MB default; the importer bounds what it reads itself.
        if (request.HttpContext.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } limit)
            limit.MaxRequestBodySize = ImageImportLimits.Default.MaxArchiveBytes;

        Stream archive;
        MediaTypeHeaderValue? contentType = null;
        if (request.ContentType is not null && !MediaTypeHeaderValue.TryParse(request.ContentType, out contentType))
            return TypedResults.Problem(statusCode: StatusCodes.Status415UnsupportedMediaType, title: "Unsupported content type",
                detail: $"the Content-Type \"{request.ContentType}\" cannot be parsed");
        if (contentType?.MediaType.Equals("multipart/form-data", StringComparison.OrdinalIgnoreCase) == true)
        {
            var part = await FindFilePartAsync(request, contentType, ct);
            if (part is null)
                return TypedResults.ValidationProblem(
                    new Dictionary<string, string[]> { ["file"] = ["the multipart form has no \"file\" part holding the archive"] },
                    title: "The import request is invalid");
            archive = part;
        }
        else if (contentType is null || ArchiveContentTypes.Contains(contentType.MediaType.ToString()))
        {
            archive = request.Body;
        }
        else
        {
            return TypedResults.Problem(statusCode: StatusCodes.Status415UnsupportedMediaType, title: "Unsupported content type",
                detail: $"send the archive as application/octet-stream or application/x-tar, or as the \"file\" part of multipart/form-data, not {contentType.MediaType}");
        }

        try
        {
            await store.ImportAsync(archive, name, ct);
        }
        catch (ImageImportException e)
        {
            return TypedResults.Problem(statusCode: StatusCodes.Status400BadRequest, title: "The archive cannot be imported", detail: e.Message);
        }
        var image = store.Find(reference.ToString())
                    ?? throw new InvalidOperationException($"image {reference} was imported but its record is missing");
        return TypedResults.Created($"/api/v1/images/{image.Name}", ImageDto.From(image));
    }

    /// <summary><c>GET /api/v1/images</c>: every image on this node, by name.</summary>
    public static Ok<IReadOnlyList<ImageDto>> List(ImageStore store) =>
        TypedResults.Ok<IReadOnlyList<ImageDto>>(store.List().Select(ImageDto.From).ToList());

    /// <summary><c>DELETE /api/v1/images/{name}</c>: removes the image and the layers no other image uses.</summary>
    public static async Task<Results<NoContent, ValidationProblem, ProblemHttpResult>> DeleteAsync(
        string name, ImageStore store, JobStore jobs, CancellationToken ct)
    {
        if (!ImageReference.TryParse(name, out var reference, out var nameError))
            return TypedResults.ValidationProblem(new Dictionary<string, string[]> { ["name"] = [nameError] }, title: "The image name is invalid");
        var inUse = await jobs.InUseImageDigestsAsync(ct);
        try
        {
            await store.DeleteAsync(reference.ToString(), inUse.Contains, ct);
            return TypedResults.NoContent();
        }
        catch (ImageNotFoundException e)
        {
            return TypedResults.Problem(statusCode: StatusCodes.Status404NotFound, title: "Image not found", detail: e.Message);
        }
        catch (ImageInUseException e)
        {
            return TypedResults.Problem(statusCode: StatusCodes.Status409Conflict, title: "Image in use", detail: e.Message);
        }
    }

    private static async Task<Stream?> FindFilePartAsync(HttpRequest request, MediaTypeHeaderValue contentType, CancellationToken ct)
    {
        var boundary = HeaderUtilities.RemoveQuotes(contentType.Boundary).Value;
        if (string.IsNullOrEmpty(boundary)) return null;
        // Sections are read in order and the file is streamed from the body: no form buffering to disk or memory.
        var reader = new MultipartReader(boundary, request.Body) { BodyLengthLimit = null };
        while (await reader.ReadNextSectionAsync(ct) is { } section)
        {
            if (ContentDispositionHeaderValue.TryParse(section.ContentDisposition, out var disposition) &&
                disposition.DispositionType.Equals("form-data") &&
                HeaderUtilities.RemoveQuotes(disposition.Name).Equals("file", StringComparison.Ordinal))
                return section.Body;
        }
        return null;
    }
}
