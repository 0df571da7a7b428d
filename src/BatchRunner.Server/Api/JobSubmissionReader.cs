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

/// <summary>What <see cref="JobSubmissionReader.ReadAsync"/> made of a request: a submission, or the problem to answer.</summary>
public sealed record SubmissionRead(JobSubmission? Submission, ValidationProblem? Invalid = null, ProblemHttpResult? Problem = null);

/// <summary>
/// Reads the body of <c>POST /api/v1/jobs</c>: either <c>application/json</c> (the job spec), or
/// <c>multipart/form-data</c> with a <c>spec</c> part (the same JSON) plus input files: a part named
/// <c>archive</c> is unpacked (zip, tar, tar.gz, tar.xz, 7z), any other file part is stored as it is,
/// under its file name. Inputs are staged before the job exists and packed into this node's inputs store by
/// <see cref="PackInputsAsync"/> before it is stored; a refused submission leaves nothing behind.
/// Then the spec is checked against this node's CPUs (cpuset); network modes, capabilities and datasets are
/// checked against the live nodes' published policies (Scheduling/NodeFit).
/// </summary>
public static class JobSubmissionReader
{
    public const string SpecPart = "spec";
    public const string ArchivePart = "archive";
    private const string StagedKey = "BatchRunner.StagedInputs";

    private static readonly JsonSerializerOptions SubmissionJson = new(JsonSerializerDefaults.Web)
    {
        // A misspelt field ("memroy") must be an error, not a silently ignored setting.
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
    };

    public static async Task<SubmissionRead> ReadAsync(HttpRequest request, CancellationToken ct)
    {
        var options = request.HttpContext.RequestServices.GetRequiredService<IOptions<BatchRunnerOptions>>().Value;
        SubmissionRead read;
        if (request.HasFormContentType && MediaTypeHeaderValue.TryParse(request.ContentType, out var mt)
            && mt.MediaType.Equals("multipart/form-data", StringComparison.OrdinalIgnoreCase))
            read = await ReadMultipartAsync(request, mt, options, ct);
        else
            read = await ReadJsonAsync(request.Body, "body", ct);
        if (read.Submission is null) return read;

        var hardware = NodeHardwareErrors(read.Submission);
        return hardware.Count == 0 ? read
            : new SubmissionRead(null, TypedResults.ValidationProblem(hardware, title: "The job asks for what this node does not have"));
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

    private static async Task<SubmissionRead> ReadJsonAsync(Stream body, string field, CancellationToken ct)
    {
        try
        {
            return new SubmissionRead(await JsonSerializer.DeserializeAsync<JobSubmission>(body, SubmissionJson, ct));
        }
        catch (JsonException e)
        {
            var path = string.IsNullOrEmpty(e.Path) || e.Path == "$" ? field : e.Path.TrimStart('$', '.');
            return new SubmissionRead(null, TypedResults.ValidationProblem(
                new Dictionary<string, string[]> { [path] = [JsonErrorMessage(e)] },
                title: "The job spec is not valid JSON of the expected shape"));
        }
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
                    var read = await ReadJsonAsync(section.Body, SpecPart, ct);
                    if (read.Submission is null) return read;
                    submission = read.Submission;
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
        if (!sawSpec || submission is null) return Invalid(SpecPart, "a multipart submission needs a \"spec\" part holding the job spec as JSON");
        return new SubmissionRead(submission);
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

    private static string JsonErrorMessage(JsonException e)
    {
        var m = e.Message;
        // System.Text.Json appends "Path: ... | LineNumber: ..." — the field is reported separately.
        var cut = m.IndexOf(" Path:", StringComparison.Ordinal);
        return cut > 0 ? m[..cut] : m;
    }
}
