using System.Text.Json;
using System.Text.Json.Nodes;
using BatchRunner.Cli.Jobs;

namespace BatchRunner.Cli.Tests;

/// <summary>Job files (YAML and JSON), their inputs, and <c>--set</c> overrides: logic only, no server.</summary>
public sealed class JobFileFacts : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("br-cli-jobfile-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Write(string name, string text)
    {
        var path = Path.Combine(_dir, name);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllText(path, text);
        return path;
    }

    [Fact]
    public void Load_TypesPlainScalarsAndKeepsQuotedOnesStrings_WhenYaml()
    {
        var file = JobFile.Load(Write("job.yaml", """
            image: busybox
            command: [sh, -c, "echo 1"]
            env:
              SEED: "7"
            resources:
              cpus: 0.5
              memory: 64Mi
              pids: 32
            rootfsReadonly: true
            user: ~
            """));
        var s = file.Spec;
        Assert.Equal(JsonValueKind.Number, s["resources"]!["cpus"]!.GetValueKind());
        Assert.Equal(0.5, s["resources"]!["cpus"]!.GetValue<double>());
        Assert.Equal(32, s["resources"]!["pids"]!.GetValue<long>());
        Assert.Equal("64Mi", s["resources"]!["memory"]!.GetValue<string>());
        Assert.Equal("7", s["env"]!["SEED"]!.GetValue<string>());
        Assert.True(s["rootfsReadonly"]!.GetValue<bool>());
        Assert.Null(s["user"]);
        Assert.Equal(["sh", "-c", "echo 1"], s["command"]!.AsArray().Select(n => n!.GetValue<string>()));
    }

    [Fact]
    public void Load_ResolvesInputsRelativeToTheJobFile_AndRemovesThemFromTheSpec()
    {
        var path = Write("sub/job.json", """{ "image": "busybox", "inputs": ["data.csv", "../shared"], /* comments allowed */ }""");
        var file = JobFile.Load(path);
        Assert.False(file.Spec.ContainsKey("inputs"));
        Assert.Equal([Path.Combine(_dir, "sub", "data.csv"), Path.Combine(_dir, "shared")], file.Inputs);
    }

    [Fact]
    public void Load_NamesTheFileAndLine_WhenYamlIsBroken()
    {
        var e = Assert.Throws<CliException>(() => JobFile.Load(Write("bad.yaml", "image: busybox\nresources: [a\n")));
        Assert.Contains("bad.yaml", e.Message);
        Assert.Contains("line", e.Message);
        Assert.Equal(ExitCodes.Usage, e.ExitCode);
    }

    [Fact]
    public void Apply_SetsTypedValuesAtNestedPaths_WhenSetIsGiven()
    {
        var spec = JsonNode.Parse("""{ "image": "busybox", "command": ["sh", "-c", "x"], "env": { "A": "1" }, "name": "n" }""")!.AsObject();
        SpecOverrides.Apply(spec, [
            "resources.memory=2Gi", "resources.cpus=1.5", "retry.limit=3", "retry.onReasons=[\"oom_killed\"]",
            "env.SEED=7", "name=42", "command[2]=echo hi", "rootfsReadonly=true", "labels.team=ml",
        ]);
        Assert.Equal("2Gi", spec["resources"]!["memory"]!.GetValue<string>());
        Assert.Equal(1.5, spec["resources"]!["cpus"]!.GetValue<double>());
        Assert.Equal(3, spec["retry"]!["limit"]!.GetValue<long>());
        Assert.Equal("oom_killed", spec["retry"]!["onReasons"]![0]!.GetValue<string>());
        Assert.Equal("7", spec["env"]!["SEED"]!.GetValue<string>()); // env values are strings
        Assert.Equal("42", spec["name"]!.GetValue<string>());        // the field held a string: it stays one
        Assert.Equal("echo hi", spec["command"]![2]!.GetValue<string>());
        Assert.True(spec["rootfsReadonly"]!.GetValue<bool>());
        Assert.Equal("ml", spec["labels"]!["team"]!.GetValue<string>());
    }

    [Theory]
    [InlineData("resources.memory")]
    [InlineData("=1")]
    [InlineData("a..b=1")]
    [InlineData("command[9]=x")]
    [InlineData("image.tag=1")]
    public void Apply_RefusesWithAUsageError_WhenTheAssignmentIsMalformed(string assignment)
    {
        var spec = JsonNode.Parse("""{ "image": "busybox", "command": ["sh"] }""")!.AsObject();
        var e = Assert.Throws<CliException>(() => SpecOverrides.Apply(spec, assignment));
        Assert.Equal(ExitCodes.Usage, e.ExitCode);
        Assert.Contains("--set", e.Message);
    }

    [Fact]
    public void Check_RefusesTwoInputsWithOneName_BeforeAnythingIsSent()
    {
        var a = Write("a/data.csv", "1");
        var b = Write("b/data.csv", "2");
        var e = Assert.Throws<CliException>(() => JobInputs.Check([a, b]));
        Assert.Contains("/inputs/data.csv", e.Message);
        Assert.Throws<CliException>(() => JobInputs.Check([Path.Combine(_dir, "missing.txt")]));
    }

    public static TheoryData<string> ExampleJobs() => new(Directory.GetDirectories(Path.Combine(CliProcess.RepositoryRoot, "jobs")).Select(Path.GetFileName).OfType<string>());

    [Theory]
    [MemberData(nameof(ExampleJobs))]
    public void ExampleJob_LoadsWithItsInputsPresentAndAnExpectedOutput(string name)
    {
        var dir = Path.Combine(CliProcess.RepositoryRoot, "jobs", name);
        var file = JobFile.Load(Path.Combine(dir, "job.yaml"));
        Assert.Equal(name, file.Spec["name"]!.GetValue<string>().Replace("sweep-logreg", "sweep"));
        Assert.StartsWith("docker.io/", file.Spec["image"]!.GetValue<string>()); // online: a public image as it is
        JobInputs.Check(file.Inputs);
        Assert.True(File.Exists(Path.Combine(dir, "expected-output.txt")) || name == "sweep", $"jobs/{name} has no expected-output.txt");
    }

    [Fact]
    public void SweepExample_IsAnArrayOverTheTrainingScript_AndGpuSmokeAsksForOneGpu()
    {
        var sweep = JobFile.Load(Path.Combine(CliProcess.RepositoryRoot, "jobs", "sweep", "job.yaml"));
        Assert.Equal(6, sweep.Spec["array"]!["size"]!.GetValue<long>());
        Assert.Equal(3, sweep.Spec["array"]!["parallelism"]!.GetValue<long>());
        // 3 learning rates x 2 penalties = the array's size.
        Assert.Equal(6, sweep.Spec["env"]!["SWEEP_LEARNING_RATES"]!.GetValue<string>().Split(',').Length * sweep.Spec["env"]!["SWEEP_L2"]!.GetValue<string>().Split(',').Length);
        Assert.Equal(Path.Combine(CliProcess.RepositoryRoot, "jobs", "train-logreg", "train.py"), Assert.Single(sweep.Inputs));
        var gpu = JobFile.Load(Path.Combine(CliProcess.RepositoryRoot, "jobs", "gpu-smoke", "job.yaml"));
        Assert.Equal(1, gpu.Spec["resources"]!["gpus"]!.GetValue<long>());
    }
}
