// A client author's program: only the Kiota-generated client (namespace BatchRunner.Generated) and Kiota's runtime.
// Arguments: server URL, API key, image. Prints one JSON line of what it saw; GeneratedClientFacts asserts on it.
using System.Text.Json;
using BatchRunner.Generated;
using BatchRunner.Generated.Models;
using BatchRunner.Generated.Multipart;
using Microsoft.Kiota.Abstractions;
using Microsoft.Kiota.Abstractions.Serialization;
using Microsoft.Kiota.Abstractions.Authentication;
using Microsoft.Kiota.Http.HttpClientLibrary;

var (url, key, image) = (args[0], args[1], args[2]);
var client = Client(new BaseBearerTokenAuthenticationProvider(new ApiKeyToken(key)));
var seen = new Dictionary<string, object?>();

// Submit, wait, read the logs.
var submitted = await client.Api.V1.Jobs.PostAsync(new JobSubmission
{
    Image = image,
    Command = ["sh", "-c", "echo hello from a generated client"],
    Resources = new ResourceSubmission { Memory = new Quantity { String = "64Mi" }, Cpus = 0.5 },
    Labels = new JobSubmission_labels { AdditionalData = { ["probe"] = "kiota" } },
    TimeoutSeconds = 60,
});
seen["jobId"] = submitted!.Id.ToString();
seen["submittedState"] = submitted.State;
var job = await WaitAsync(submitted);
seen["state"] = job.State;
seen["exitCode"] = job.ExitCode;
seen["memoryBytes"] = job.Resources?.MemoryBytes;
seen["logs"] = await client.Api.V1.Jobs[job.Id.ToString()!].Logs.GetAsync();

// The multipart form as the document describes it, through a client generated for multipart/form-data
// (BatchRunner.Generated.Multipart): the spec part as JSON, plus a file part that lands in /inputs.
var tag = Guid.NewGuid().ToString("N");
var form = new MultipartBody();
form.AddOrReplacePart("spec", "application/json", new JobSubmission
{
    Image = image,
    Command = ["cat", "/inputs/hello.txt"],
    Labels = new JobSubmission_labels { AdditionalData = { ["probe"] = tag } },
});
form.AddOrReplacePart("file", "application/octet-stream", new MemoryStream("hello from an input file\n"u8.ToArray()), "hello.txt");
await new BatchRunnerMultipartClient(Adapter(new BaseBearerTokenAuthenticationProvider(new ApiKeyToken(key)))).Api.V1.Jobs.PostAsync(form);
var withInput = (await client.Api.V1.Jobs.GetAsync(r => r.QueryParameters.Limit = 1000))!.Items!
    .Single(j => j.Labels?.AdditionalData.TryGetValue("probe", out var t) == true && t switch { string v => v, UntypedString u => u.GetValue(), _ => null } == tag);
seen["multipartState"] = (await WaitAsync(withInput)).State;
seen["multipartLogs"] = await client.Api.V1.Jobs[withInput.Id.ToString()!].Logs.GetAsync();

// Errors come back as the ProblemDetails the document names.
var anonymous = Client(new AnonymousAuthenticationProvider());
try { await anonymous.Api.V1.Jobs.GetAsync(); }
catch (ProblemDetails p) { seen["withoutKeyStatus"] = p.ResponseStatusCode; seen["withoutKeyTitle"] = p.Title; }
try { await client.Api.V1.Jobs[Guid.NewGuid().ToString()].GetAsync(); }
catch (ProblemDetails p) { seen["unknownJobStatus"] = p.ResponseStatusCode; }
try { await client.Api.V1.Jobs.PostAsync(new JobSubmission { Command = ["true"] }); }
catch (HttpValidationProblemDetails p) { seen["invalidStatus"] = p.ResponseStatusCode; seen["invalidFields"] = p.Errors?.AdditionalData.Keys.ToList(); }

// The key as a Basic password (what the security scheme's description says) works as well.
var basic = Client(new BasicAuthenticationProvider("anyone", key));
seen["basicAuthListed"] = (await basic.Api.V1.Jobs.GetAsync(r => r.QueryParameters.Limit = 1000))!.Items!.Any(j => j.Id == job.Id);
seen["healthOk"] = (await anonymous.Healthz.GetAsync())?.Status == Health_status.Ok;

Console.WriteLine(JsonSerializer.Serialize(seen));

BatchRunnerApiClient Client(IAuthenticationProvider auth) => new(Adapter(auth));

HttpClientRequestAdapter Adapter(IAuthenticationProvider auth) => new(auth) { BaseUrl = url };

// Polls the job until it ends (60 s at most).
async Task<JobDto> WaitAsync(JobDto job)
{
    var deadline = DateTime.UtcNow.AddSeconds(60);
    while (job.State is "queued" or "starting" or "running")
    {
        if (DateTime.UtcNow > deadline) throw new TimeoutException($"job {job.Id} still {job.State} after 60 s");
        await Task.Delay(100);
        job = (await client.Api.V1.Jobs[job.Id.ToString()!].GetAsync())!;
    }
    return job;
}

sealed class ApiKeyToken(string key) : IAccessTokenProvider
{
    public AllowedHostsValidator AllowedHostsValidator { get; } = new();
    public Task<string> GetAuthorizationTokenAsync(Uri uri, Dictionary<string, object>? context = null, CancellationToken ct = default) => Task.FromResult(key);
}
