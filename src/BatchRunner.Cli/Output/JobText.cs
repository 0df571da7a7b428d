using System.Text.Json;

namespace BatchRunner.Cli.Output;

/// <summary>A job document for people: the fields that matter, then usage, outputs and attempts.</summary>
internal static class JobText
{
    public static void Write(JobView job)
    {
        var j = job.Json;
        var rows = new List<(string, string?)>
        {
            ("id", job.Id), ("name", job.Name), ("state", job.State), ("reason", job.Reason), ("message", job.Message),
            ("exit code", job.ExitCode?.ToString()), ("image", job.Image), ("image digest", Str(j, "imageDigest")),
            ("queue", Str(j, "queue")), ("node", job.Node), ("attempt", Raw(j, "attempt")),
            ("created", Str(j, "createdAt")), ("started", Str(j, "startedAt")), ("finished", Str(j, "finishedAt")),
        };
        if (job.Array is { } array)
            rows.Add(("array", Jobs.JobWatcher.ArrayProgress(array.Size, array.Counts)[7..] + $" (children: batchrunner children {job.Id}; one: status {job.Id}:INDEX)"));
        if (Str(j, "parentId") is { } parent) rows.Add(("array child", $"index {Raw(j, "arrayIndex")} of {parent}"));
        if (j.TryGetProperty("dependsOn", out var deps) && deps.ValueKind == JsonValueKind.Array && deps.GetArrayLength() > 0)
            rows.Add(("depends on", string.Join(", ", deps.EnumerateArray().Select(d => $"{Str(d, "job")} ({Str(d, "condition")})"))));
        if (Str(j, "scheduleId") is { } schedule) rows.Add(("schedule", schedule));
        if (j.TryGetProperty("resources", out var r) && r.ValueKind == JsonValueKind.Object)
            rows.Add(("resources", string.Join(", ", r.EnumerateObject()
                .Where(p => p.Value.ValueKind is not JsonValueKind.Null && p.Name != "memoryBytes")
                .Select(p => $"{p.Name} {Plain(p.Value)}"))));
        if (j.TryGetProperty("usage", out var u) && u.ValueKind == JsonValueKind.Object)
        {
            var parts = new List<string>();
            if (u.TryGetProperty("cpuSeconds", out var cpu) && cpu.ValueKind == JsonValueKind.Number) parts.Add($"cpu {cpu.GetDouble():0.00} s");
            if (u.TryGetProperty("maxMemoryBytes", out var mem) && mem.ValueKind == JsonValueKind.Number) parts.Add($"peak memory {Units.Bytes(mem.GetInt64())}");
            if (u.TryGetProperty("oomKills", out var oom) && oom.ValueKind == JsonValueKind.Number && oom.GetInt64() > 0) parts.Add($"OOM kills {oom.GetInt64()}");
            rows.Add(("usage", string.Join(", ", parts)));
        }
        var width = rows.Max(r => r.Item1.Length) + 2;
        foreach (var (k, v) in rows)
            if (!string.IsNullOrEmpty(v)) Console.Out.WriteLine((k + ":").PadRight(width) + v);

        if (job.Outputs.Count > 0)
        {
            Console.Out.WriteLine("outputs:");
            foreach (var o in job.Outputs) Console.Out.WriteLine($"  {o.Path}  {Units.Bytes(o.Size)}  sha256:{o.Sha256}");
        }
        if (j.TryGetProperty("attempts", out var attempts) && attempts.ValueKind == JsonValueKind.Array && attempts.GetArrayLength() > 1)
        {
            Console.Out.WriteLine("attempts:");
            foreach (var a in attempts.EnumerateArray())
                Console.Out.WriteLine($"  #{Raw(a, "attempt")} on {Str(a, "node")}: {Str(a, "state")}" +
                    (Str(a, "reason") is { } reason ? $" ({reason})" : "") + (Str(a, "message") is { } m ? $": {m}" : ""));
        }
    }

    private static string? Str(JsonElement e, string name) =>
        e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    private static string? Raw(JsonElement e, string name) =>
        e.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null ? Plain(v) : null;

    private static string Plain(JsonElement v) => v.ValueKind == JsonValueKind.String ? v.GetString()! : v.GetRawText();
}
