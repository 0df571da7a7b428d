using System.Text.Json;
using System.Text.Json.Serialization;
using BatchRunner.Core;
using BatchRunner.Server.Hosting;
using BatchRunner.Server.Storage;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.WebUtilities;
using Microsoft.Extensions.Options;
using Microsoft.Net.Http.Headers;

namespace BatchRunner.Server.Api;

/// <summary>
/// What <see cref="JobSubmissionReader.ReadAsync"/> made of a request: the submission (what was well-formed in it) with
/// the fields that were not (<see cref="FieldErrors"/>, to be answered together with the semantic errors), or a
/// problem that ends the request at once (a malformed multipart body, inputs refused).
/// </summary>
public sealed record SubmissionRead(JobSubmission? Submission, ValidationProblem? Invalid = null, ProblemHttpResult? Problem = null)
{
    public IReadOnlyDictionary<string, string[]> FieldErrors { get; init; } = new Dictionary<string, string[]>();
}

/// <summary>
/// Reads the body of <c>POST /api/v1/jobs</c>: either <c>application/json</c> (the job spec), or
/// <c>multipart/form-data</c> with a <c>spec</c> part (the same JSON) plus input files: a part named
/// <c>archive</c> is unpacked (zip, tar, tar.gz, tar.xz, 7z), any other file part is stored as it is,
/// under its file name. Inputs are staged before the job exists, listed (<see cref="StagedInputsAsync"/>) and packed
/// into this node's inputs store (<see cref="PackInputsAsync"/>) before it is stored; a refused submission leaves
/// nothing behind. The spec is read by <see cref="SubmissionShape"/>: every unknown or ill-typed field is named, in the
/// API's terms. This node's CPUs (cpuset) are checked here (<see cref="NodeHardwareErrors"/>); network modes,
/// capabilities and datasets against the live nodes' published policies (Scheduling/NodeFit).
/// </summary>
public static class JobSubmissionReader
{
    public const string SpecPart = "spec";
    public const string ArchivePart = "archive";
    private const string StagedKey = "BatchRunner.StagedInputs";

    public static async Task<SubmissionRead> ReadAsync(HttpRequest request, CancellationToken ct)
    {
        var options = request.HttpContext.RequestServices.GetRequiredService<IOptions<BatchRunnerOptions>>().Value;
        SubmissionRead read;
        if (request.HasFormContentType && MediaTypeHeaderValue.TryParse(request.ContentType, out var mt)
            && mt.MediaType.Equals("multipart/form-data", StringComparison.OrdinalIgnoreCase))
            read = await ReadMultipartAsync(request, mt, options, ct);
        else
            read = await ReadJsonAsync(request.Body, "body", request.ContentLength, ct);
        return read;
    }

    /// <summary>The staged inputs (path, size, sha256 of each regular file), as the job lists them; empty without inputs.
    /// Reads every byte once more: the price of a listing the user can check their data against.</summary>
    public static async Task<IReadOnlyList<OutputFile>> StagedInputsAsync(HttpRequest request, CancellationToken ct)
    {
        if (request.HttpContext.Items[StagedKey] is not InputFiles staged || staged.IsEmpty) return [];
        var max = request.HttpContext.RequestServices.GetRequiredService<IOptions<BatchRunnerOptions>>().Value.Isolation.MaxInputEntries;
        return await OutputScanner.ScanAsync(staged.Dir, ct, max);
    }

    /// <summary>
    /// Packs the staged inputs (if any) into this node's <see cref="InputsStore"/>; null when there were none. The
    /// result holds the tar's digest until disposed: dispose it once the job's record (which names the digest) is
    /// stored, or refused. The staging directory goes with the request.
    /// </summary>
    public static async Task<InputsStore.PackedInputs?> PackInputsAsync(HttpRequest request, CancellationToken ct)
    {
        if (request.HttpContext.Items[StagedKey] is not InputFiles staged || staged.IsEmpty) return null;
        return await request.HttpContext.RequestServices.GetRequiredService<InputsStore>().PackAsync(staged.Dir, ct);
    }

    // At most JsonBody.MaxBytes (1 MiB; 413 beyond). A misspelt field ("memroy") is an error, not a silently ignored
    // setting; every one is named, with what was wrong.
    private static async Task<SubmissionRead> ReadJsonAsync(Stream body, string field, long? declaredLength, CancellationToken ct)
    {
        var read = await JsonBody.ReadDocumentAsync(body, field, declaredLength, ct);
        if (read.Document is null) return new SubmissionRead(null, read.Invalid, read.TooLarge);
        using var doc = read.Document;
        var (submission, errors) = SubmissionShape.Read(doc.RootElement, field);
        return new SubmissionRead(submission) { FieldErrors = errors };
    }

    private static async Task<SubmissionRead> ReadMultipartAsync(HttpRequest request, MediaTypeHeaderValue mt, BatchRunnerOptions options, CancellationToken ct)
    {
        var iso = options.Isolation;
        // The body may be as large as the inputs allowed plus the spec and multipart framing.
        if (request.HttpContext.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } limit)
            limit.MaxRequestBodySize = iso.MaxInputBytes + (16L << 20);
        var boundary = HeaderUtilities.RemoveQuotes(mt.Boundary).Value;
        if (string.IsNullOrEmpty(boundary)) return Invalid("body", "multipart/form-data needs a boundary");

        var staged = new InputFiles(request.HttpContext.RequestServices.GetRequiredService<DataPaths>().InputsStaging, iso.MaxInputBytes, iso.MaxInputEntries);
        // Removed at the end of the request unless committed into a job.
        request.HttpContext.Response.RegisterForDispose(staged);
        request.HttpContext.Items[StagedKey] = staged;

        JobSubmission? submission = null;
        IReadOnlyDictionary<string, string[]> specErrors = new Dictionary<string, string[]>();
        var sawSpec = false;
        var reader = new MultipartReader(boundary, request.Body) { BodyLengthLimit = iso.MaxInputBytes + (16L << 20) };
        try
        {
            MultipartSection? section;
            while ((section = await reader.ReadNextSectionAsync(ct)) is not null)
            {
                if (!ContentDispositionHeaderValue.TryParse(section.ContentDisposition, out var cd) || !cd.DispositionType.Equals("form-data", StringComparison.OrdinalIgnoreCase))
                    return Invalid("body", "every multipart part needs Content-Disposition: form-data with a name");
                var name = HeaderUtilities.RemoveQuotes(cd.Name).Value ?? "";
                var fileName = HeaderUtilities.RemoveQuotes(cd.FileNameStar.HasValue ? cd.FileNameStar : cd.FileName).Value;
                if (name == SpecPart)
                {
                    if (sawSpec) return Invalid(SpecPart, "only one spec part is allowed");
                    sawSpec = true;
                    // The spec part has the JSON body's limit, whatever the inputs' size.
                    var read = await ReadJsonAsync(section.Body, SpecPart, declaredLength: null, ct);
                    if (read.Invalid is not null || read.Problem is not null) return read;
                    submission = read.Submission;
                    specErrors = read.FieldErrors;
                }
                else if (string.IsNullOrEmpty(fileName))
                    return Invalid(name, $"part \"{name}\" is neither the spec nor a file (it has no file name)");
                else if (name == ArchivePart)
                    await staged.AddArchiveAsync(name, fileName, section.Body, ct);
                else
                    await staged.AddFileAsync(name, fileName, section.Body, ct);
            }
        }
        catch (InputRejectedException e)
        {
            staged.Dispose(); // nothing stays behind, whatever happens next
            if (e.TooLarge)
                return new SubmissionRead(null, Problem: TypedResults.Problem(statusCode: StatusCodes.Status413PayloadTooLarge, title: "Inputs too large", detail: e.Message));
            return Invalid(e.Field, e.Message, "The job's inputs were refused; nothing was stored");
        }
        catch (Exception e) when (e is InvalidDataException or IOException && e is not FileNotFoundException)
        {
            staged.Dispose();
            return Invalid("body", $"malformed multipart body: {e.Message}");
        }
        if (!sawSpec) return Invalid(SpecPart, "a multipart submission needs a \"spec\" part holding the job spec as JSON");
        return new SubmissionRead(submission) { FieldErrors = specErrors };
    }

    /// <summary>What the submission asks for that this node's hardware cannot give (field → messages). Network modes,
    /// capabilities and datasets are checked against the live nodes' published policies (Scheduling/NodeFit), not
    /// this API node's settings.</summary>
    public static Dictionary<string, string[]> NodeHardwareErrors(JobSubmission s)
    {
        var errors = new Dictionary<string, string[]>();
        if (s.Resources?.Cpuset is { } cpuset && JobSpecValidator.TryCpuset(cpuset, out var cpus))
        {
            var online = OnlineCpus();
            var missing = cpus.Where(c => !online.Contains(c)).ToList();
            if (missing.Count > 0)
                errors["resources.cpuset"] = [$"CPUs {JobSpecValidator.CpusetToString(missing)} do not exist on this node (online: {JobSpecValidator.CpusetToString(online)})"];
        }
        return errors;
    }

    private static SortedSet<int> OnlineCpus()
    {
        try
        {
            if (JobSpecValidator.TryCpuset(File.ReadAllText("/sys/devices/system/cpu/online").Trim(), out var cpus)) return cpus;
        }
        catch (IOException) { }
        return [.. Enumerable.Range(0, Environment.ProcessorCount)];
    }

    private static SubmissionRead Invalid(string field, string message, string title = "The job submission is invalid") =>
        new(null, TypedResults.ValidationProblem(new Dictionary<string, string[]> { [field] = [message] }, title: title));
}
