namespace BatchRunner.Server.Storage;

/// <summary>
/// Which jobs a listing returns; every part given must match (an empty filter matches every job). Each part has an
/// index that yields its jobs newest first (migration 0060).
/// </summary>
public sealed record JobFilter
{
    /// <summary>Any of these states; empty: any state.</summary>
    public IReadOnlyList<string> States { get; init; } = [];
    /// <summary>The job's name, exactly, or (with <see cref="NameIsPrefix"/>) how it starts.</summary>
    public string? Name { get; init; }
    public bool NameIsPrefix { get; init; }
    /// <summary>Labels the job must all carry with these values.</summary>
    public IReadOnlyDictionary<string, string> Labels { get; init; } = new Dictionary<string, string>();
    /// <summary>Created at or after.</summary>
    public DateTimeOffset? Since { get; init; }
    /// <summary>Created before.</summary>
    public DateTimeOffset? Until { get; init; }
    public string? Queue { get; init; }
    /// <summary>Only the runs of this schedule.</summary>
    public Guid? Schedule { get; init; }
    /// <summary>Only this tenant's jobs; null: every tenant's (an admin's listing).</summary>
    public string? Tenant { get; init; }
}
