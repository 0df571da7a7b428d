namespace BatchRunner.Core;

public sealed partial record JobSubmission
{
    public ArraySubmission? Array { get; init; }
    public List<DependencySubmission>? DependsOn { get; init; }
    public List<InputsFromSubmission>? InputsFrom { get; init; }
}

public sealed record ArraySubmission
{
    public int? Size { get; init; }
    /// <summary>Default: the size (no limit).</summary>
    public int? Parallelism { get; init; }
}

public sealed record DependencySubmission
{
    public string? Job { get; init; }
    /// <summary>succeeded (default) | finished | failed.</summary>
    public string? Condition { get; init; }
}

public sealed record InputsFromSubmission
{
    public string? Job { get; init; }
    /// <summary>A relative directory within the job's outputs; default: all of them.</summary>
    public string? Path { get; init; }
}
