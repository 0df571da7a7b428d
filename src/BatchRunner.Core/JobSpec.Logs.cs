namespace BatchRunner.Core;

public sealed partial record JobSpec
{
    /// <summary>How much of the job's output is kept.</summary>
    public LogSettings Logs { get; init; } = LogSettings.Default;
}

/// <summary>
/// The job's log settings. <see cref="MaxBytes"/> caps each of stdout and stderr (the node's <c>MaxLogBytes</c> when
/// null, and never above it): past it a stream keeps its first and last parts and a marker line says what was dropped.
/// </summary>
public sealed record LogSettings
{
    public static readonly LogSettings Default = new();

    /// <summary>Per-stream cap in bytes; null: the node's.</summary>
    public long? MaxBytes { get; init; }

    /// <summary>The smallest cap: a head, a tail part and the marker line must fit.</summary>
    public const long MinBytes = 4096;
}
