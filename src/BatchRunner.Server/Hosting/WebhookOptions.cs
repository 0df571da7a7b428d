namespace BatchRunner.Server.Hosting;

/// <summary>Section "BatchRunner:Webhooks": the calls made to jobs' <c>notify.url</c> when they end.</summary>
public sealed class WebhookOptions
{
    /// <summary>The HMAC-SHA256 key of <c>X-BatchRunner-Signature</c> for jobs that bring no <c>notify.secret</c> of
    /// their own. Unset: such jobs are refused (every call is signed). Every node needs the same value.</summary>
    public string? Secret { get; set; }

    /// <summary>Hosts a webhook may call, as registry host patterns: <c>*</c> (any host except loopback, link-local
    /// and cloud metadata addresses), <c>*.example.com</c>, <c>hooks.example.com</c>, <c>127.0.0.1:9000</c>. A special
    /// host is allowed only when a pattern other than <c>*</c> names it.</summary>
    public string[] AllowedHosts { get; set; } = ["*"];

    /// <summary>Tries per delivery, the first included.</summary>
    public int MaxAttempts { get; set; } = 8;

    /// <summary>Wait before the second try; it doubles with each further try (at most an hour).</summary>
    public double InitialBackoffSeconds { get; set; } = 5;

    /// <summary>How long one call may take (connect, send, response headers).</summary>
    public double TimeoutSeconds { get; set; } = 10;

    /// <summary>How often a node looks for due deliveries when nothing woke it: a job that ends on a node wakes that node's
    /// sender at once, and a retry wakes it when due, so this only bounds how long a delivery waits whose node went away
    /// before sending it.</summary>
    public double PollSeconds { get; set; } = 10;

    public TimeSpan BackoffAfter(int attempt) =>
        TimeSpan.FromSeconds(Math.Min(InitialBackoffSeconds * Math.Pow(2, Math.Max(0, attempt - 1)), 3600));

    public void Validate()
    {
        if (Secret is { Length: > 0 and < 16 }) throw new InvalidOperationException("BatchRunner:Webhooks:Secret must be at least 16 characters");
        foreach (var p in AllowedHosts)
            if (Oci.Registry.RegistryPolicy.Validate(p) is { } error) throw new InvalidOperationException($"BatchRunner:Webhooks:AllowedHosts: {error}");
        if (MaxAttempts is < 1 or > 100) throw new InvalidOperationException("BatchRunner:Webhooks:MaxAttempts must be between 1 and 100");
        if (InitialBackoffSeconds is < 0 or > 3600) throw new InvalidOperationException("BatchRunner:Webhooks:InitialBackoffSeconds must be between 0 and 3600");
        if (TimeoutSeconds is <= 0 or > 300) throw new InvalidOperationException("BatchRunner:Webhooks:TimeoutSeconds must be between 0 and 300");
        if (PollSeconds is <= 0 or > 60) throw new InvalidOperationException("BatchRunner:Webhooks:PollSeconds must be between 0 and 60");
    }
}
