using System.Text.Json;

namespace BatchRunner.Core;

public static partial class JobSpecValidator
{
    /// <summary>The log cap's own rules; that it is not above the node's MaxLogBytes is checked by the API, which knows the node.</summary>
    static partial void ValidateLogs(JobSubmission s, Action<string, string> add, ref JobSpec spec)
    {
        if (s.Logs?.MaxBytes is not { } m || m.ValueKind == JsonValueKind.Null) return;
        if (!TryMemory(m, out var bytes, out var why)) add("logs.maxBytes", why.Replace("memory", "logs.maxBytes"));
        else if (bytes < LogSettings.MinBytes) add("logs.maxBytes", $"logs.maxBytes must be at least {Quantity.FormatBytes(LogSettings.MinBytes)}");
        else spec = spec with { Logs = new LogSettings { MaxBytes = bytes } };
    }
}
