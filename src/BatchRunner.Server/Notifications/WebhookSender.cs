using System.Net.Http.Headers;
using System.Text.Json;
using BatchRunner.Server.Hosting;
using BatchRunner.Server.Storage;
using Microsoft.Extensions.Options;

namespace BatchRunner.Server.Notifications;

/// <summary>
/// Calls jobs' <c>notify.url</c> once they have ended: a POST of the final job document (as <c>GET /api/v1/jobs/{id}</c>
/// returns it), signed (<see cref="WebhookSignature"/>). Runs on every node; deliveries are claimed from the database
/// (<see cref="NotificationStore"/>), so each is sent by one node at a time and one whose sender died is sent again
/// by another. Retried with exponential back-off (<see cref="WebhookOptions"/>) on any answer but 2xx, then given up
/// (<c>failed</c>). At least once: a receiver may see a delivery twice (same <c>X-BatchRunner-Delivery</c>).
/// </summary>
/// <remarks>
/// Redirects are not followed (a redirect could lead past the host policy); every connection goes through
/// <see cref="WebhookPolicy.ConnectAsync"/>. What is recorded as <c>lastError</c> is shown to the job's tenant: it
/// says what kind of failure it was and never quotes the receiver's body or an address it resolved to. Log lines
/// name the job and the host, never the URL (webhook URLs often carry a token) or the key.
/// </remarks>
public sealed partial class WebhookSender(
    NotificationStore notifications,
    JobSecretStore secrets,
    IJobDocuments documents,
    IHttpClientFactory http,
    IOptions<BatchRunnerOptions> options,
    IOptions<Microsoft.AspNetCore.Http.Json.JsonOptions> json,
    WorkflowSignal signal,
    ILogger<WebhookSender> log) : BackgroundService
{
    /// <summary>Pulsed when a job ends or is cancelled here: its delivery is due now.</summary>
    private readonly WorkflowSignal.Subscription ended = signal.Subscribe();

    public const string HttpClientName = "webhooks";
    public const string DeliveryHeader = "X-BatchRunner-Delivery";
    public const string AttemptHeader = "X-BatchRunner-Attempt";
    public const string EventHeader = "X-BatchRunner-Event";
    private const int BatchSize = 16;

    private WebhookOptions Settings => options.Value.Webhooks;

    /// <summary>The handler every webhook call goes through: the host policy at connect time, no redirects, no cookies.</summary>
    public static SocketsHttpHandler CreateHandler(WebhookPolicy policy) => new()
    {
        AllowAutoRedirect = false,
        UseCookies = false,
        ConnectCallback = policy.ConnectAsync,
        PooledConnectionLifetime = TimeSpan.FromMinutes(2),
    };

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        // Woken when a job ends here (its delivery becomes due at once) and when the next retry is due; otherwise it looks
        // every PollSeconds, for deliveries of jobs that ended on a node that went away before sending them.
        var idle = TimeSpan.FromSeconds(Settings.PollSeconds);
        while (!stoppingToken.IsCancellationRequested)
        {
            var wait = idle;
            try
            {
                var due = await notifications.ClaimDueAsync(BatchSize, TimeSpan.FromSeconds(Settings.TimeoutSeconds + 30), stoppingToken);
                await Task.WhenAll(due.Select(d => DeliverAsync(d, stoppingToken)));
                // A full batch: more may be due now.
                wait = due.Count == BatchSize ? TimeSpan.Zero
                    : await notifications.NextDueInAsync(stoppingToken) is { } next && next < idle ? next : idle;
            }
            catch (Exception e) when (!stoppingToken.IsCancellationRequested)
            {
                // The database being away, most likely; never a reason to stop sending for good.
                LogClaimFailed(log, e.Message);
            }
            try
            {
                if (wait > TimeSpan.Zero) await ended.WaitAsync(wait, stoppingToken);
            }
            catch (OperationCanceledException) { return; }
        }
    }

    /// <summary>One try of one delivery; its outcome is recorded whatever happens (or, when not even that can be
    /// written, the claim runs out and the try is made again).</summary>
    internal async Task DeliverAsync(DueNotification due, CancellationToken ct)
    {
        try
        {
            await TryDeliverAsync(due, ct);
        }
        catch (Exception e) when (!ct.IsCancellationRequested)
        {
            LogDeliveryError(log, due.JobId, e);
        }
    }

    private async Task TryDeliverAsync(DueNotification due, CancellationToken ct)
    {
        var host = Uri.TryCreate(due.Url, UriKind.Absolute, out var uri) ? uri.Host : "?";
        var document = await documents.GetAsync(due.JobId, ct);
        if (document is null) return; // the job was deleted (its delivery row with it)
        var key = (await secrets.GetAsync(due.JobId, ct)).NotifySecret ?? Settings.Secret;
        if (string.IsNullOrEmpty(key))
        {
            await RecordFailureAsync(due, host, "no signing key: the job has no notify.secret and the server no BatchRunner:Webhooks:Secret", retry: false, ct);
            return;
        }
        var body = JsonSerializer.SerializeToUtf8Bytes(document, json.Value.SerializerOptions);
        using var request = new HttpRequestMessage(HttpMethod.Post, uri) { Content = new ByteArrayContent(body) };
        request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json") { CharSet = "utf-8" };
        request.Headers.TryAddWithoutValidation(WebhookSignature.Header, WebhookSignature.Sign(key, body));
        request.Headers.TryAddWithoutValidation(DeliveryHeader, due.JobId.ToString());
        request.Headers.TryAddWithoutValidation(AttemptHeader, due.Attempt.ToString(System.Globalization.CultureInfo.InvariantCulture));
        request.Headers.TryAddWithoutValidation(EventHeader, "job.ended");
        request.Headers.UserAgent.Add(new ProductInfoHeaderValue("BatchRunner", "1"));

        string error;
        var retry = true;
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(TimeSpan.FromSeconds(Settings.TimeoutSeconds));
        try
        {
            using var response = await http.CreateClient(HttpClientName).SendAsync(request, HttpCompletionOption.ResponseHeadersRead, timeout.Token);
            if (response.IsSuccessStatusCode)
            {
                await Durably.RunAsync(c => notifications.DeliveredAsync(due.JobId, c));
                LogDelivered(log, due.JobId, host, due.Attempt, (int)response.StatusCode);
                return;
            }
            error = $"HTTP {(int)response.StatusCode} {response.ReasonPhrase}";
        }
        catch (HttpRequestException e) when (e.InnerException is Oci.Registry.RegistryPolicyException refused)
        {
            (error, retry) = (refused.Message, false);
        }
        catch (HttpRequestException e)
        {
            error = e.HttpRequestError switch
            {
                HttpRequestError.NameResolutionError => $"the name {host} did not resolve",
                HttpRequestError.ConnectionError => $"could not connect to {host}",
                HttpRequestError.SecureConnectionError => $"TLS with {host} failed",
                _ => $"the call to {host} failed ({e.HttpRequestError})",
            };
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            error = $"no answer within {Settings.TimeoutSeconds:0.#} s";
        }
        await RecordFailureAsync(due, host, error, retry, ct);
    }

    private async Task RecordFailureAsync(DueNotification due, string host, string error, bool retry, CancellationToken ct)
    {
        TimeSpan? next = retry && due.Attempt < Settings.MaxAttempts ? Settings.BackoffAfter(due.Attempt) : null;
        await Durably.RunAsync(c => notifications.AttemptFailedAsync(due.JobId, $"attempt {due.Attempt}: {error}", next, c));
        if (next is { } wait) LogRetrying(log, due.JobId, host, due.Attempt, error, wait.TotalSeconds);
        else LogGaveUp(log, due.JobId, host, due.Attempt, error);
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Job {JobId}: webhook to {Host} delivered (attempt {Attempt}, HTTP {Status})")]
    private static partial void LogDelivered(ILogger log, Guid jobId, string host, int attempt, int status);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Job {JobId}: webhook to {Host}, attempt {Attempt} failed: {Error}; next try in {Seconds:0.#} s")]
    private static partial void LogRetrying(ILogger log, Guid jobId, string host, int attempt, string error, double seconds);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Job {JobId}: webhook to {Host} failed after {Attempt} attempts: {Error}")]
    private static partial void LogGaveUp(ILogger log, Guid jobId, string host, int attempt, string error);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Webhooks: could not claim due deliveries ({Reason}); trying again")]
    private static partial void LogClaimFailed(ILogger log, string reason);

    [LoggerMessage(Level = LogLevel.Error, Message = "Job {JobId}: webhook delivery failed inside BatchRunner; it is tried again once its claim runs out")]
    private static partial void LogDeliveryError(ILogger log, Guid jobId, Exception e);
}

/// <summary>The job document a webhook carries (the API's <c>GET /api/v1/jobs/{id}</c>), without knowing the API.</summary>
public interface IJobDocuments
{
    Task<object?> GetAsync(Guid jobId, CancellationToken ct);
}
