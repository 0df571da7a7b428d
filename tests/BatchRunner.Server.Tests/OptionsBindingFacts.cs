using BatchRunner.Server.Hosting;
using Microsoft.Extensions.Configuration;

namespace BatchRunner.Server.Tests;

/// <summary>Settings read from configuration: a configured list replaces its default rather than adding to it.</summary>
public sealed class OptionsBindingFacts
{
    private static BatchRunnerOptions Bind(params (string Key, string Value)[] settings) =>
        BatchRunnerOptions.From(new ConfigurationBuilder()
            .AddInMemoryCollection(settings.Select(s => new KeyValuePair<string, string?>("BatchRunner:" + s.Key, s.Value)))
            .Build());

    [Fact]
    public void From_ReplacesTheDefaultLists_WhenTheyAreConfigured()
    {
        var o = Bind(("Isolation:AllowedNetworkModes:0", "none"), ("Isolation:AllowedCapabilities:0", "CHOWN"),
            ("AllowedRegistries:0", "registry.example.com"), ("Queues:0", "gpu"), ("Queues:1", "default"));

        Assert.Equal(["none"], o.Isolation.AllowedNetworkModes);
        Assert.Equal(["CHOWN"], o.Isolation.AllowedCapabilities);
        Assert.Equal(["registry.example.com"], o.AllowedRegistries);
        Assert.Equal(["gpu", "default"], o.Queues);
    }

    [Fact]
    public void From_KeepsTheDefaults_WhenNothingIsConfigured()
    {
        var o = Bind(("Retention:FinishedJobs", "7d"));

        Assert.Equal(new BatchRunnerOptions().Isolation.AllowedNetworkModes, o.Isolation.AllowedNetworkModes);
        Assert.Equal(new BatchRunnerOptions().Isolation.AllowedCapabilities, o.Isolation.AllowedCapabilities);
        Assert.Equal(["default"], o.Queues);
        Assert.Equal(TimeSpan.FromDays(7), o.Retention.FinishedJobsAge());
    }

    [Theory]
    [InlineData("7d", 7 * 86400)]
    [InlineData("1d12h", 36 * 3600)]
    [InlineData("90m", 5400)]
    [InlineData("45s", 45)]
    public void FinishedJobsAge_ReadsDurations(string text, int seconds) =>
        Assert.Equal(TimeSpan.FromSeconds(seconds), new RetentionSettings { FinishedJobs = text }.FinishedJobsAge());

    [Theory]
    [InlineData("7")]
    [InlineData("1w")]
    [InlineData("0d")]
    [InlineData("d")]
    public void FinishedJobsAge_RefusesWhatIsNotAPositiveDuration(string text) =>
        Assert.Contains("Retention:FinishedJobs", Assert.Throws<InvalidOperationException>(() => new RetentionSettings { FinishedJobs = text }.FinishedJobsAge()).Message);
}
