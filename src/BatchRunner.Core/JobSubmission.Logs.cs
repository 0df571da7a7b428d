using System.Text.Json;

namespace BatchRunner.Core;

public sealed partial record JobSubmission
{
    public LogsSubmission? Logs { get; init; }
}

public sealed record LogsSubmission
{
    /// <summary>Per-stream cap: a quantity ("10Mi") or integer bytes.</summary>
    public JsonElement? MaxBytes { get; init; }
}
