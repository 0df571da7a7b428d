using BatchRunner.Core;
using BatchRunner.Server.Scheduling;
using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Tests.Scheduling;

/// <summary>"Could this job ever run on that node?": one answer for submission and for the executor.</summary>
public sealed class NodeFitFacts
{
    private static readonly Dictionary<string, string> ZoneA = new() { ["zone"] = "a" };

    private static NodeOffer Node(string name = "n1", double cpus = 4, string memory = "8Gi", int gpus = 0, string[]? models = null,
        IReadOnlyList<string>? devices = null, Dictionary<string, string>? labels = null) =>
        new(name, new NodeCapacity(cpus, Bytes(memory), gpus) { GpuModels = models ?? [] }, labels ?? ZoneA, devices);

    private static long Bytes(string q) => Quantity.TryParseBytes(q, out var b) ? b : throw new ArgumentException(q);

    private static JobSpec Spec(double cpus = 1, string memory = "512Mi", int gpus = 0, string? model = null, Dictionary<string, string>? selector = null) =>
        JobSpecValidator.Validate(new JobSubmission
        {
            Image = "example.invalid/x:1",
            Resources = new ResourceSubmission { Cpus = cpus, Memory = System.Text.Json.JsonSerializer.SerializeToElement(memory), Gpus = gpus, GpuModel = model },
            NodeSelector = selector,
        }).Spec ?? throw new InvalidOperationException("invalid test spec");

    public static TheoryData<string, JobSpec, NodeOffer, string?> WhyNeverCases => new()
    {
        { "fits", Spec(), Node(), null },
        { "fits exactly", Spec(cpus: 4, memory: "8Gi"), Node(), null },
        { "selector matches", Spec(selector: new() { ["zone"] = "a" }), Node(), null },
        { "selector differs", Spec(selector: new() { ["zone"] = "b" }), Node(), "its labels do not match the nodeSelector zone=b" },
        { "label missing", Spec(selector: new() { ["gpu"] = "yes" }), Node(), "its labels do not match the nodeSelector gpu=yes" },
        { "too many CPUs", Spec(cpus: 8), Node(), "8 CPUs requested, node has 4" },
        { "too much memory", Spec(memory: "16Gi"), Node(), "16Gi memory requested, node has 8Gi" },
        { "too many GPUs", Spec(gpus: 2), Node(gpus: 1, models: ["Tesla T4"]), "2 GPUs requested, node has 1" },
        { "GPU model present (record)", Spec(gpus: 1, model: "t4"), Node(gpus: 1, models: ["Tesla T4"]), null },
        { "GPU model absent (record)", Spec(gpus: 1, model: "H100"), Node(gpus: 1, models: ["Tesla T4"]), "GPU model \"H100\" requested, node has Tesla T4" },
        { "GPU model counted (devices)", Spec(gpus: 2, model: "H100"), Node(gpus: 2, models: ["Tesla T4", "NVIDIA H100"], devices: ["Tesla T4", "NVIDIA H100"]),
            "2 GPUs of model \"H100\" requested, node has 1" },
        { "GPU model enough (devices)", Spec(gpus: 2, model: "H100"), Node(gpus: 2, models: ["NVIDIA H100"], devices: ["NVIDIA H100", "NVIDIA H100"]), null },
        { "no model asked", Spec(gpus: 1), Node(gpus: 1, models: ["Tesla T4"], devices: ["Tesla T4"]), null },
        { "one GPU, singular", Spec(gpus: 1), Node(), "1 GPU requested, node has 0" },
        { "memory in human units", Spec(memory: "6Gi"), Node(memory: "5534966Ki"), "6Gi memory requested, node has 5.3Gi" },
    };

    [Theory]
    [MemberData(nameof(WhyNeverCases))]
    public void WhyNever_NamesTheFirstReason_OrNullWhenTheJobCouldRun(string @case, JobSpec spec, NodeOffer node, string? expected)
    {
        Assert.True(expected == NodeFit.WhyNever(spec, node), $"{@case}: expected {expected ?? "null"}, got {NodeFit.WhyNever(spec, node) ?? "null"}");
    }

    [Fact]
    public void WhyNoNodeFits_IsEmpty_WhenOneNodeCouldRunIt()
    {
        Assert.Empty(NodeFit.WhyNoNodeFits(Spec(cpus: 6), [Node("small"), Node("big", cpus: 8)]));
    }

    [Fact]
    public void WhyNoNodeFits_NamesEachShortResource_WithTheLargestNodesFigure()
    {
        var errors = NodeFit.WhyNoNodeFits(Spec(cpus: 64, memory: "1Ti", gpus: 3), [Node("a", cpus: 2, memory: "4Gi"), Node("b", cpus: 1, memory: "8Gi", gpus: 2, models: ["T4"])]);
        Assert.Equal(["64 CPUs requested; the largest live node has 2"], errors["resources.cpus"]);
        Assert.Equal(["1Ti memory requested; the largest live node has 8Gi"], errors["resources.memory"]);
        Assert.Equal(["3 GPUs requested; the largest live node has 2"], errors["resources.gpus"]);
    }

    [Fact]
    public void WhyNoNodeFits_SaysNoSingleNode_WhenEachResourceExistsButNotTogether()
    {
        var errors = NodeFit.WhyNoNodeFits(Spec(cpus: 4, memory: "8Gi"), [Node("cpu", cpus: 4, memory: "1Gi"), Node("mem", cpus: 1, memory: "8Gi")]);
        Assert.Equal(["resources"], errors.Keys);
        Assert.Contains("no single live node", errors["resources"][0]);
    }

    [Fact]
    public void WhyNoNodeFits_NamesTheSelector_OrTheMissingGpuModel_OrTheMissingNodes()
    {
        Assert.Contains("zone=b", NodeFit.WhyNoNodeFits(Spec(selector: new() { ["zone"] = "b" }), [Node()])["nodeSelector"][0]);
        Assert.Contains("no live worker node", NodeFit.WhyNoNodeFits(Spec(), [])["resources"][0]);
        var model = NodeFit.WhyNoNodeFits(Spec(gpus: 1, model: "H100"), [Node(gpus: 2, models: ["Test GPU"])]);
        Assert.Equal(["no live node has 1 GPU of a model matching \"H100\" (models: Test GPU)"], model["resources.gpuModel"]);
    }
}
