using BatchRunner.Core;

namespace BatchRunner.Core.Tests;

public sealed class QuantityFacts
{
    [Theory]
    [InlineData("64Mi", 64L * 1024 * 1024)]
    [InlineData("2Gi", 2L * 1024 * 1024 * 1024)]
    [InlineData("512M", 512_000_000L)]
    [InlineData("1k", 1000L)]
    [InlineData("1Ki", 1024L)]
    [InlineData("1.5Gi", 1610612736L)]
    [InlineData("123", 123L)]
    [InlineData(" 8Mi ", 8L * 1024 * 1024)]
    public void TryParseBytes_ParsesKubernetesQuantities(string text, long expected)
    {
        Assert.True(Quantity.TryParseBytes(text, out var bytes));
        Assert.Equal(expected, bytes);
    }

    [Theory]
    [InlineData("lots")]
    [InlineData("")]
    [InlineData("-1Mi")]
    [InlineData("1Xi")]
    [InlineData("1 2")]
    [InlineData("99999999999E")]
    public void TryParseBytes_Fails_WhenNotAQuantity(string text) => Assert.False(Quantity.TryParseBytes(text, out _));

    [Theory]
    [InlineData(64L * 1024 * 1024, "64Mi")]
    [InlineData(1024L * 1024 * 1024, "1Gi")]
    [InlineData(1000L, "1000")]
    public void FormatBytes_UsesTheLargestExactBinarySuffix(long bytes, string expected) => Assert.Equal(expected, Quantity.FormatBytes(bytes));

    [Theory]
    [InlineData(22586940L * 1024, "21.5Gi")]
    [InlineData(64L * 1024 * 1024, "64Mi")]
    [InlineData(512_000_000L, "488.3Mi")]
    [InlineData(1536L * 1024 * 1024, "1.5Gi")]
    [InlineData(1000L, "1000")]
    [InlineData(4L << 40, "4Ti")]
    public void Human_RoundsToOneDecimalOfTheLargestUnit(long bytes, string expected) => Assert.Equal(expected, Quantity.Human(bytes));

    [Theory]
    [InlineData(1, "GPU", "1 GPU")]
    [InlineData(2, "GPU", "2 GPUs")]
    [InlineData(0.5, "CPU", "0.5 CPU")]
    [InlineData(1.5, "CPU", "1.5 CPUs")]
    public void Count_UsesThePluralOnlyForMoreThanOne(double n, string noun, string expected) => Assert.Equal(expected, Quantity.Count(n, noun));
}
