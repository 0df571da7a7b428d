namespace BatchRunner.Core;

public sealed partial record JobSubmission
{
    public Dictionary<string, string>? NodeSelector { get; init; }
    public RetrySubmission? Retry { get; init; }
}

public sealed record RetrySubmission
{
    public int? Limit { get; init; }
    public List<int>? OnExitCodes { get; init; }
    public List<string>? OnReasons { get; init; }
    public int? BackoffSeconds { get; init; }
}
