using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using YamlDotNet.RepresentationModel;

namespace BatchRunner.Runtime.Gpus;

/// <summary>
/// Reads CDI specs (JSON or YAML, cdiVersion 0.3–1.0) of one kind from the CDI directories. Only the parts
/// BatchRunner injects are read: devices[].name, devices[].containerEdits and the spec-wide containerEdits
/// (deviceNodes, mounts, env, hooks). A malformed file is skipped with a warning, never fatal.
/// </summary>
internal sealed partial class CdiSpecs
{
    /// <summary>Annotations a CDI device may carry to describe itself when no NVIDIA driver can (tests, other vendors).</summary>
    public const string UuidAnnotation = "batchrunner.io/gpu-uuid";
    public const string ModelAnnotation = "batchrunner.io/gpu-model";
    public const string MemoryAnnotation = "batchrunner.io/gpu-memory-bytes";

    public sealed record Device(string Kind, string Name, GpuContainerEdits Edits, IReadOnlyDictionary<string, string> Annotations, string File)
    {
        public string QualifiedName => $"{Kind}={Name}";
    }

    public required string Kind { get; init; }
    public required IReadOnlyList<Device> Devices { get; init; }
    public required GpuContainerEdits Common { get; init; }
    public required IReadOnlyList<string> Files { get; init; }

    [GeneratedRegex(@"^/dev/nvidia(\d+)$")]
    private static partial Regex NvidiaGpuNode();

    public static CdiSpecs Load(IReadOnlyList<string> directories, string kind, List<string> warnings)
    {
        var devices = new List<Device>();
        var common = GpuContainerEdits.Empty;
        var files = new List<string>();
        foreach (var dir in directories)
        {
            if (!Directory.Exists(dir)) continue;
            foreach (var file in Directory.EnumerateFiles(dir).Order(StringComparer.Ordinal))
            {
                var ext = Path.GetExtension(file).ToLowerInvariant();
                if (ext is not (".json" or ".yaml" or ".yml")) continue;
                JsonObject root;
                try
                {
                    var text = File.ReadAllText(file);
                    root = (ext == ".json" ? JsonNode.Parse(text) : YamlToJson(text)) as JsonObject
                           ?? throw new FormatException("the document is not a mapping");
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException or JsonException or FormatException or YamlDotNet.Core.YamlException)
                {
                    warnings.Add($"CDI spec {file} skipped: {e.Message}");
                    continue;
                }
                if (Str(root, "kind") != kind) continue;
                try
                {
                    var specCommon = ParseEdits(root["containerEdits"] as JsonObject);
                    var parsed = new List<Device>();
                    foreach (var d in root["devices"] as JsonArray ?? [])
                    {
                        if (d is not JsonObject dev) throw new FormatException("devices[] entries must be mappings");
                        var name = Str(dev, "name") ?? throw new FormatException("a device has no name");
                        var annotations = (dev["annotations"] as JsonObject ?? [])
                            .Where(kv => kv.Value is JsonValue).ToDictionary(kv => kv.Key, kv => kv.Value!.ToString());
                        parsed.Add(new Device(kind, name, ParseEdits(dev["containerEdits"] as JsonObject), annotations, file));
                    }
                    // A later directory's device replaces an earlier one of the same name (CDI's priority order).
                    devices.RemoveAll(x => parsed.Any(p => p.Name == x.Name));
                    devices.AddRange(parsed);
                    common = common.Merge(specCommon);
                    files.Add(file);
                }
                catch (Exception e) when (e is FormatException or InvalidOperationException or JsonException)
                {
                    warnings.Add($"CDI spec {file} skipped: {e.Message}");
                }
            }
        }
        return new CdiSpecs { Kind = kind, Devices = devices, Common = common, Files = files };
    }

    /// <summary>
    /// GPUs from the CDI devices. The aggregate device "all" and devices naming the same nodes as an earlier
    /// one (nvidia-ctk can list each GPU by index and by UUID) are left out. Model, memory and UUID come from
    /// NVIDIA discovery (matched by UUID name or by the /dev/nvidiaN minor), else from annotations.
    /// </summary>
    public GpuInventory ToInventory(NvidiaDiscovery.Result? nvidia, List<string> warnings)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var candidates = new List<(Device Dev, int? Index)>();
        foreach (var d in Devices)
        {
            if (d.Name == "all") continue;
            if (d.Edits.DeviceNodes.Count == 0) { warnings.Add($"CDI device {d.QualifiedName} has no device nodes; skipped"); continue; }
            var key = string.Join('\n', d.Edits.DeviceNodes.Select(n => n.EffectiveHostPath).Order(StringComparer.Ordinal));
            if (!seen.Add(key)) continue;
            candidates.Add((d, int.TryParse(d.Name, NumberStyles.None, CultureInfo.InvariantCulture, out var i) ? i : null));
        }
        var useNames = candidates.All(c => c.Index is not null) && candidates.Select(c => c.Index).Distinct().Count() == candidates.Count;
        var ordered = useNames ? candidates.OrderBy(c => c.Index).ToList() : candidates;
        var gpus = new List<Gpu>();
        for (var n = 0; n < ordered.Count; n++)
        {
            var (dev, idx) = ordered[n];
            var known = nvidia?.Gpus.FirstOrDefault(g => g.Uuid == dev.Name)
                        ?? (MinorOf(dev) is { } minor ? nvidia?.ByMinor.GetValueOrDefault(minor) : null);
            var uuid = known?.Uuid ?? dev.Annotations.GetValueOrDefault(UuidAnnotation)
                       ?? (dev.Name.StartsWith("GPU-", StringComparison.Ordinal) ? dev.Name : dev.QualifiedName);
            var model = known?.Model ?? dev.Annotations.GetValueOrDefault(ModelAnnotation) ?? "unknown";
            var memory = known?.MemoryBytes
                         ?? (long.TryParse(dev.Annotations.GetValueOrDefault(MemoryAnnotation), NumberStyles.None, CultureInfo.InvariantCulture, out var m) ? m : 0);
            gpus.Add(new Gpu(useNames ? idx!.Value : n, uuid, model, memory, known?.PciBusId, dev.QualifiedName, dev.Edits));
        }
        var source = "cdi:" + string.Join(",", Files);
        return new GpuInventory(gpus, Common, source, warnings);
    }

    private static int? MinorOf(Device d)
    {
        foreach (var node in d.Edits.DeviceNodes)
        {
            if (node.Minor is { } mi && node.Major is 195) return (int)mi;
            if (NvidiaGpuNode().Match(node.Path) is { Success: true } m) return int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
        }
        return null;
    }

    private static GpuContainerEdits ParseEdits(JsonObject? e)
    {
        if (e is null) return GpuContainerEdits.Empty;
        var nodes = new List<GpuDeviceNode>();
        foreach (var n in e["deviceNodes"] as JsonArray ?? [])
        {
            if (n is not JsonObject o) throw new FormatException("deviceNodes[] entries must be mappings");
            var path = Str(o, "path") ?? throw new FormatException("a device node has no path");
            if (!path.StartsWith('/')) throw new FormatException($"device node path \"{path}\" must be absolute");
            nodes.Add(new GpuDeviceNode(path, Str(o, "hostPath"), Str(o, "type"), Num(o, "major"), Num(o, "minor"),
                Num(o, "fileMode") is { } fm ? (uint)fm : null, Str(o, "permissions") ?? "rwm"));
        }
        var mounts = new List<GpuMount>();
        foreach (var m in e["mounts"] as JsonArray ?? [])
        {
            if (m is not JsonObject o) throw new FormatException("mounts[] entries must be mappings");
            var host = Str(o, "hostPath") ?? throw new FormatException("a mount has no hostPath");
            var target = Str(o, "containerPath") ?? throw new FormatException($"mount of {host} has no containerPath");
            var options = Strs(o, "options");
            mounts.Add(new GpuMount(host, target, options.Count > 0 ? options : GpuMount.ReadOnlyOptions));
        }
        var hooks = new List<GpuHook>();
        foreach (var h in e["hooks"] as JsonArray ?? [])
        {
            if (h is not JsonObject o) throw new FormatException("hooks[] entries must be mappings");
            hooks.Add(new GpuHook(Str(o, "hookName") ?? throw new FormatException("a hook has no hookName"),
                Str(o, "path") ?? throw new FormatException("a hook has no path"), Strs(o, "args"), Strs(o, "env"),
                Num(o, "timeout") is { } t ? (int)t : null));
        }
        return new GpuContainerEdits { DeviceNodes = nodes, Mounts = mounts, Env = Strs(e, "env"), Hooks = hooks };
    }

    private static string? Str(JsonObject o, string key) => o[key] is JsonValue v ? v.ToString() : null;

    private static long? Num(JsonObject o, string key) => o[key] switch
    {
        JsonValue v when v.TryGetValue<long>(out var l) => l,
        JsonValue v when long.TryParse(v.ToString(), NumberStyles.Integer, CultureInfo.InvariantCulture, out var l) => l,
        null => null,
        var other => throw new FormatException($"{key} must be an integer, not {other.ToJsonString()}"),
    };

    private static List<string> Strs(JsonObject o, string key) =>
        (o[key] as JsonArray ?? []).Select(x => x?.ToString() ?? throw new FormatException($"{key}[] has a null entry")).ToList();

    /// <summary>YAML (one document) as JSON nodes: plain scalars that read as integers or booleans become those.</summary>
    internal static JsonNode? YamlToJson(string text)
    {
        var stream = new YamlStream();
        stream.Load(new StringReader(text));
        return stream.Documents.Count == 0 ? null : Convert(stream.Documents[0].RootNode);

        static JsonNode? Convert(YamlNode node) => node switch
        {
            YamlMappingNode map => new JsonObject(map.Children.Select(kv =>
                KeyValuePair.Create(((YamlScalarNode)kv.Key).Value ?? "", Convert(kv.Value)))),
            YamlSequenceNode seq => new JsonArray(seq.Children.Select(Convert).ToArray()),
            YamlScalarNode s when s.Style == YamlDotNet.Core.ScalarStyle.Plain => s.Value switch
            {
                null or "" or "~" or "null" => null,
                "true" => JsonValue.Create(true),
                "false" => JsonValue.Create(false),
                var v when long.TryParse(v, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var l) => JsonValue.Create(l),
                var v when v.StartsWith("0o", StringComparison.Ordinal) => JsonValue.Create(System.Convert.ToInt64(v[2..], 8)),
                var v => JsonValue.Create(v),
            },
            YamlScalarNode s => JsonValue.Create(s.Value ?? ""),
            _ => throw new FormatException($"unsupported YAML node {node.NodeType}"),
        };
    }
}
