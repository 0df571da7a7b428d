using System.Text.Json;
using BatchRunner.Core;

namespace BatchRunner.Core.Tests;

public sealed class IsolationValidatorFacts
{
    private static JobSubmission Parse(string json) =>
        JsonSerializer.Deserialize<JobSubmission>(json, new JsonSerializerOptions(JsonSerializerDefaults.Web))!;

    [Fact]
    public void Defaults_AreNoneNetworkNoCapabilitiesWritableRoot()
    {
        var r = JobSpecValidator.Validate(Parse("""{"image":"busybox"}"""));
        Assert.True(r.IsValid);
        Assert.Equal(NetworkModes.None, r.Spec!.Network);
        Assert.Empty(r.Spec.Capabilities);
        Assert.False(r.Spec.RootfsReadonly);
        Assert.Null(r.Spec.ShmSizeBytes);
        Assert.Null(r.Spec.Resources.Cpuset);
    }

    [Fact]
    public void Fields_AreNormalised()
    {
        var r = JobSpecValidator.Validate(Parse("""
            {"image":"b","network":"bridge","capabilities":["cap_net_bind_service","NET_BIND_SERVICE"],"rootfsReadonly":true,
             "ulimits":{"NOFILE":4096},"shmSize":"256Mi","volumes":[{"dataset":"imagenet","path":"/data//train/"}],
             "resources":{"memory":"1Gi","cpuset":"1,0,2-3","cpuShares":512}}
            """));
        Assert.True(r.IsValid, string.Join("; ", r.Errors.SelectMany(e => e.Value)));
        var s = r.Spec!;
        Assert.Equal("bridge", s.Network);
        Assert.Equal(["NET_BIND_SERVICE"], s.Capabilities);
        Assert.Equal(4096, s.Ulimits["nofile"]);
        Assert.Equal(256L << 20, s.ShmSizeBytes);
        Assert.Equal(new VolumeMount("imagenet", "/data/train"), s.Volumes.Single());
        Assert.Equal("0-3", s.Resources.Cpuset);
        Assert.Equal(512, s.Resources.CpuShares);
    }

    [Theory]
    [InlineData("""{"image":"b","volumes":[{"dataset":"d","path":"relative"}]}""", "volumes[0].path")]
    [InlineData("""{"image":"b","volumes":[{"dataset":"d","path":"/sys/x"}]}""", "volumes[0].path")]
    [InlineData("""{"image":"b","volumes":[{"dataset":"d","path":"/"}]}""", "volumes[0].path")]
    [InlineData("""{"image":"b","volumes":[{"dataset":"/host/dir","path":"/d"}]}""", "volumes[0].dataset")]
    [InlineData("""{"image":"b","volumes":[{"dataset":"a","path":"/d"},{"dataset":"b","path":"/d/"}]}""", "volumes[1].path")]
    [InlineData("""{"image":"b","shmSize":"10k"}""", "shmSize")]
    [InlineData("""{"image":"b","ulimits":{"nofile":8}}""", "ulimits.nofile")]
    [InlineData("""{"image":"b","resources":{"cpuset":"3-1"}}""", "resources.cpuset")]
    public void BadFields_AreNamed(string json, string field)
    {
        var r = JobSpecValidator.Validate(Parse(json));
        Assert.False(r.IsValid);
        Assert.Contains(field, r.Errors.Keys);
    }
}
