using System.Text.Json;
using BatchRunner.Core;

namespace BatchRunner.Core.Tests;

public sealed class DiskValidationFacts
{
    private static ValidationResult Validate(string resourcesJson) =>
        JobSpecValidator.Validate(JsonSerializer.Deserialize<JobSubmission>($$"""{"image":"busybox","resources":{{resourcesJson}}}""",
            new JsonSerializerOptions(JsonSerializerDefaults.Web))!);

    [Theory]
    [InlineData("\"10Gi\"", 10L << 30)]
    [InlineData("\"512M\"", 512_000_000L)]
    [InlineData("1048576", 1L << 20)]
    public void Validate_TakesDiskAsAQuantity_LikeMemory(string disk, long expected)
    {
        var result = Validate($$"""{"disk":{{disk}}}""");

        Assert.True(result.IsValid);
        Assert.Equal(expected, result.Spec!.Resources.DiskBytes);
    }

    [Fact]
    public void Validate_LeavesDiskUnset_WhenOmitted_SoTheNodeDefaultApplies()
    {
        var result = Validate("""{"cpus":1}""");

        Assert.Equal(0, result.Spec!.Resources.DiskBytes);
    }

    [Theory]
    [InlineData("\"lots\"", "disk \"lots\" is not a quantity: use bytes or a number with a suffix such as \"64Mi\", \"2Gi\", \"512M\"")]
    [InlineData("-5", "disk must be positive: an integer of bytes or a quantity such as \"64Mi\", \"2Gi\", \"512M\"")]
    [InlineData("\"100Ki\"", "disk must be at least 1Mi")]
    [InlineData("true", "disk must be a string quantity (\"64Mi\") or an integer of bytes")]
    public void Validate_NamesResourcesDisk_WhenItIsNotAUsableQuantity(string disk, string message)
    {
        var result = Validate($$"""{"disk":{{disk}}}""");

        Assert.Equal([message], result.Errors["resources.disk"]);
    }
}
