namespace BatchRunner.Server.Hosting;

/// <summary>Start-up failures whose message says everything a person needs, told in one line without a stack trace.</summary>
public static class StartupFailure
{
    /// <summary>The line to print for <paramref name="e"/>, or null when its stack trace is worth showing.</summary>
    public static string? Describe(Exception e) => e switch
    {
        StartupRefusedException refused => refused.Message,
        // Kestrel: "Failed to bind to address http://127.0.0.1:8080: address already in use."
        IOException io when io.Message.StartsWith("Failed to bind to address", StringComparison.Ordinal) =>
            $"{io.Message.TrimEnd('.')}: another process listens there; choose another with --urls or BATCHRUNNER_URLS",
        _ => null,
    };
}
