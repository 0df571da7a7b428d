using System.Text.Json;
using BatchRunner.Core;

namespace BatchRunner.Core.Tests;

public sealed class JobSpecValidatorFacts
{
    private static ResourceSubmission Resources(string memoryJson, double? cpus = null, int? pids = null) =>
        new() { Memory = JsonDocument.Parse(memoryJson).RootElement, Cpus = cpus, Pids = pids };

    [Fact]
    public void Validate_AppliesDefaults_WhenOnlyImageIsGiven()
    {
        var r = JobSpecValidator.Validate(new JobSubmission { Image = "busybox" });
        Assert.True(r.IsValid);
        Assert.Equal(JobDefaults.Cpus, r.Spec!.Resources.Cpus);
        Assert.Equal(JobDefaults.MemoryBytes, r.Spec.Resources.MemoryBytes);
        Assert.Equal(JobDefaults.Pids, r.Spec.Resources.Pids);
        Assert.Equal(JobDefaults.TimeoutSeconds, r.Spec.TimeoutSeconds);
        Assert.Equal("default", r.Spec.Queue);
    }

    [Theory]
    [InlineData("\"10Mi\"", 10L << 20)]
    [InlineData("4096", 4096L)]
    [InlineData("null", null)]
    public void Validate_TakesTheLogCap_AsAQuantityOrBytes(string maxBytesJson, long? expected)
    {
        var r = JobSpecValidator.Validate(new JobSubmission { Image = "busybox", Logs = new LogsSubmission { MaxBytes = JsonDocument.Parse(maxBytesJson).RootElement } });
        Assert.True(r.IsValid);
        Assert.Equal(expected, r.Spec!.Logs.MaxBytes);
    }

    [Theory]
    [InlineData("\"4095\"", "at least 4Ki")]
    [InlineData("-1", "positive")]
    [InlineData("\"a lot\"", "not a quantity")]
    [InlineData("true", "quantity")]
    public void Validate_NamesLogsMaxBytes_WhenItIsNoUsableCap(string maxBytesJson, string why)
    {
        var r = JobSpecValidator.Validate(new JobSubmission { Image = "busybox", Logs = new LogsSubmission { MaxBytes = JsonDocument.Parse(maxBytesJson).RootElement } });
        Assert.Contains(why, Assert.Single(r.Errors["logs.maxBytes"]));
    }

    [Fact]
    public void Validate_NamesEveryBadField()
    {
        var r = JobSpecValidator.Validate(new JobSubmission
        {
            Resources = Resources("\"lots\"", cpus: -1, pids: 0),
            TimeoutSeconds = -5,
            WorkingDir = "relative",
            Queue = "Bad Queue",
            Env = new() { ["OK"] = "1", ["1BAD"] = "x" },
        });
        Assert.False(r.IsValid);
        Assert.Equal(
            ["env.1BAD", "image", "queue", "resources.cpus", "resources.memory", "resources.pids", "timeoutSeconds", "workingDir"],
            r.Errors.Keys.Order());
    }

    [Fact]
    public void Validate_AcceptsMemoryAsStringOrBytes()
    {
        Assert.Equal(64L << 20, JobSpecValidator.Validate(new JobSubmission { Image = "x", Resources = Resources("\"64Mi\"") }).Spec!.Resources.MemoryBytes);
        Assert.Equal(67108864, JobSpecValidator.Validate(new JobSubmission { Image = "x", Resources = Resources("67108864") }).Spec!.Resources.MemoryBytes);
    }

    [Fact]
    public void Validate_RejectsMemoryBelowTheMinimum()
    {
        var r = JobSpecValidator.Validate(new JobSubmission { Image = "x", Resources = Resources("\"1Ki\"") });
        Assert.Contains("resources.memory", r.Errors.Keys);
    }

    [Fact]
    public void Validate_KeepsFractionalCpus() =>
        Assert.Equal(0.5, JobSpecValidator.Validate(new JobSubmission { Image = "x", Resources = new ResourceSubmission { Cpus = 0.5 } }).Spec!.Resources.Cpus);

    [Fact]
    public void Validate_RejectsEmptyCommand() =>
        Assert.Contains("command", JobSpecValidator.Validate(new JobSubmission { Image = "x", Command = [] }).Errors.Keys);

    [Fact]
    public void JobState_KnowsFinalStates()
    {
        Assert.True(JobState.IsFinal(JobState.Succeeded));
        Assert.True(JobState.IsFinal(JobState.Failed));
        Assert.True(JobState.IsFinal(JobState.Cancelled));
        Assert.False(JobState.IsFinal(JobState.Running));
        Assert.False(JobState.IsFinal(JobState.Queued));
    }

    [Theory]
    [InlineData("\"0\"", "memory \"0\" must be positive")]
    [InlineData("0", "memory must be positive")]
    [InlineData("-5", "memory must be positive")]
    [InlineData("\"0Mi\"", "memory \"0Mi\" must be positive")]
    public void Validate_SaysMemoryMustBePositive_WhenItIsZero(string memory, string start)
    {
        var r = JobSpecValidator.Validate(new JobSubmission { Image = "busybox", Resources = Resources(memory) });
        Assert.StartsWith(start, r.Errors["resources.memory"].Single());
    }
}
