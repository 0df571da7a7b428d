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
    [InlineData(512L, "512 B")]
    [InlineData(1536L, "1.5 KiB")]
    [InlineData(300L << 20, "300 MiB")]
    [InlineData((1L << 30) + (1L << 29) + 12345, "1.5 GiB")]
    [InlineData(12_345_678_901L, "11.5 GiB")]
    public void FormatApproximate_GivesThreeSignificantDigitsAndAUnit(long bytes, string expected) => Assert.Equal(expected, Quantity.FormatApproximate(bytes));
}
