using System.Text.RegularExpressions;
using BatchRunner.Core;

namespace BatchRunner.Core.Tests;

/// <summary>Reading a submission against its shape: every unknown and ill-typed field at once, in the API's words.</summary>
public sealed partial class SubmissionShapeFacts
{
    // What System.Text.Json's own messages look like: a CLR type or namespace. None may reach a user.
    [GeneratedRegex(@"System\.|BatchRunner\.|`1|Int32|Int64|Nullable|List<|Dictionary<|JsonElement|could not be (converted|mapped)")]
    private static partial Regex DotNetWords();

    private static Dictionary<string, string[]> Errors(string json) => SubmissionShape.Read(json).Errors;

    [Fact]
    public void Read_NamesEveryBadField_InTheApisWords_WhenSeveralAreWrong()
    {
        var errors = Errors("""
            {"image": "busybox", "command": "python3 run.py", "resources": {"memroy": "1Gi", "cpus": "two"},
             "timeoutSeconds": 1.5, "env": {"A": 1}, "labels": ["x"], "retry": {"onExitCodes": [3, "4"]}, "rootfsReadonly": "yes"}
            """);
        Assert.Equal(["command", "env.A", "labels", "resources.cpus", "resources.memroy", "retry.onExitCodes[1]", "rootfsReadonly", "timeoutSeconds"],
            errors.Keys.Order(StringComparer.Ordinal));
        Assert.Equal("expected an array of strings, not the string \"python3 run.py\"", errors["command"].Single());
        Assert.Equal("unknown field (did you mean \"memory\"?)", errors["resources.memroy"].Single());
        Assert.StartsWith("expected a number", errors["resources.cpus"].Single());
        Assert.StartsWith("expected an integer", errors["timeoutSeconds"].Single());
        Assert.StartsWith("expected a string", errors["env.A"].Single());
        Assert.StartsWith("expected an object of strings", errors["labels"].Single());
        Assert.StartsWith("expected an integer", errors["retry.onExitCodes[1]"].Single());
        Assert.StartsWith("expected true or false", errors["rootfsReadonly"].Single());
        Assert.All(errors.Values.SelectMany(m => m), m => Assert.DoesNotMatch(DotNetWords(), m));
    }

    [Fact]
    public void Read_KeepsTheWellFormedFields_WhenOthersAreWrong()
    {
        var (submission, errors) = SubmissionShape.Read("""{"image": "busybox", "resources": {"memory": "64Mi", "cpus": "x"}, "bogus": 1}""");
        Assert.Equal(["bogus", "resources.cpus"], errors.Keys.Order(StringComparer.Ordinal));
        Assert.Equal("busybox", submission!.Image);
        Assert.Equal("64Mi", submission.Resources!.Memory!.Value.GetString());
        Assert.Null(submission.Resources.Cpus);
    }

    [Fact]
    public void Read_SuggestsTheNestedField_WhenItIsWrittenOneLevelTooHigh()
    {
        Assert.Equal("unknown field (did you mean \"resources.memory\"?)", Errors("""{"image": "x", "memroy": "1Gi"}""")["memroy"].Single());
        Assert.Equal("unknown field (did you mean \"resources.cpus\"?)", Errors("""{"image": "x", "cpus": 2}""")["cpus"].Single());
    }

    [Fact]
    public void Read_ListsTheKnownFields_WhenNothingIsClose()
    {
        var message = Errors("""{"image": "x", "resources": {"flux": 1}}""")["resources.flux"].Single();
        Assert.StartsWith("unknown field; known fields of resources: ", message);
        Assert.Contains("memory", message);
    }

    [Fact]
    public void Read_AcceptsEveryFormTheApiDocuments()
    {
        var (submission, errors) = SubmissionShape.Read("""
            {"name": "n", "image": "busybox", "command": ["sh", "-c", "true"], "args": [], "env": {"A": "1"}, "workingDir": "/w",
             "user": "1:1", "resources": {"cpus": 0.5, "memory": 67108864, "pids": 64, "gpus": 0, "cpuShares": 1024, "cpuset": "0"},
             "timeoutSeconds": 60, "queue": "default", "labels": {"k": "v"}, "pullPolicy": "never", "nodeSelector": {"zone": "a"},
             "retry": {"limit": 1, "onExitCodes": [3], "onReasons": ["oom_killed"], "backoffSeconds": 1},
             "network": "none", "capabilities": [], "rootfsReadonly": true, "ulimits": {"nofile": 1024}, "shmSize": "64Mi",
             "volumes": [{"dataset": "d", "path": "/data"}], "comment": null}
            """);
        Assert.Equal(["comment"], errors.Keys);
        Assert.Equal(["sh", "-c", "true"], submission!.Command);
    }

    [Theory]
    [InlineData("[1, 2]", "body", "expected a JSON object")]
    [InlineData("{\"image\": \"x\", \"volumes\": [{\"dataset\": 1}]}", "volumes[0].dataset", "expected a string")]
    [InlineData("{\"image\": \"x\", \"command\": [\"a\", null]}", "command[1]", "expected a string, not null")]
    [InlineData("{\"image\": \"x\", \"resources\": \"big\"}", "resources", "expected an object, not the string \"big\"")]
    [InlineData("{\"image\": \"x\", \"resources\": {\"pids\": 99999999999}}", "resources.pids", "expected an integer")]
    [InlineData("{\"image\": \"x\", \"timeoutSeconds\": 6e1}", "timeoutSeconds", "expected an integer")]
    [InlineData("not json", "body", "not valid JSON (line 1, column ")]
    public void Read_NamesTheField_WhenOneIsWrong(string json, string field, string start)
    {
        var errors = Errors(json);
        Assert.True(errors.TryGetValue(field, out var messages), string.Join("; ", errors.Select(e => $"{e.Key}: {string.Join(", ", e.Value)}")));
        Assert.StartsWith(start, messages!.Single());
        Assert.DoesNotMatch(DotNetWords(), messages.Single());
    }

    [Theory]
    [InlineData("memroy", "memory", 1)]
    [InlineData("comand", "command", 1)]
    [InlineData("timeoutSecond", "timeoutSeconds", 1)]
    [InlineData("imgae", "image", 1)]
    public void EditDistance_CountsSmallTypos(string typo, string word, int distance) =>
        Assert.Equal(distance, SubmissionShape.EditDistance(typo, word));
}
