using System.Text.Json;
using BatchRunner.Core;

namespace BatchRunner.Core.Tests;

public sealed class GpuValidationFacts
{
    private static ValidationResult Validate(string resourcesJson) => JobSpecValidator.Validate(new JobSubmission
    {
        Image = "busybox",
        Resources = JsonSerializer.Deserialize<ResourceSubmission>(resourcesJson, new JsonSerializerOptions(JsonSerializerDefaults.Web)),
    });

    [Fact]
    public void Validate_SetsGpusAndModel_WhenGiven()
    {
        var r = Validate("""{ "gpus": 2, "gpuModel": " H100 " }""");
        Assert.True(r.IsValid);
        Assert.Equal((2, "H100"), (r.Spec!.Resources.Gpus, r.Spec.Resources.GpuModel));
    }

    [Fact]
    public void Validate_DefaultsToNoGpus()
    {
        var r = JobSpecValidator.Validate(new JobSubmission { Image = "busybox" });
        Assert.Equal((0, null), (r.Spec!.Resources.Gpus, r.Spec.Resources.GpuModel));
    }

    [Theory]
    [InlineData("""{ "gpus": -1 }""", "resources.gpus")]
    [InlineData("""{ "gpus": 65 }""", "resources.gpus")]
    [InlineData("""{ "gpuModel": "H100" }""", "resources.gpuModel")]
    [InlineData("""{ "gpus": 1, "gpuModel": "" }""", "resources.gpuModel")]
    public void Validate_NamesTheBadGpuField(string json, string field)
    {
        var r = Validate(json);
        Assert.False(r.IsValid);
        Assert.Contains(field, r.Errors.Keys);
    }
}
