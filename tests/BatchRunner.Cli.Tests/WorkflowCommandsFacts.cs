using System.Text.Json;
using System.Text.RegularExpressions;
using BatchRunner.Testing;

namespace BatchRunner.Cli.Tests;

/// <summary>Arrays and dependencies as the CLI shows them (<c>submit --wait</c>, <c>children</c>, <c>status</c>, <c>list</c>), against a real server.</summary>
[Collection(CliCollection.Name)]
public sealed partial class WorkflowCommandsFacts(CliFixture f) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("br-cli-workflows-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [GeneratedRegex(@"job (\S+) submitted")]
    private static partial Regex Submitted();

    private async Task<CliResult> OkAsync(params string[] args)
    {
        var r = await f.RunAsync(args);
        Assert.True(r.ExitCode == 0, r.ToString());
        return r;
    }

    [Fact]
    public async Task SubmitWait_ShowsTheArraysProgress_AndChildrenListsEachIndex()
    {
        var file = Path.Combine(_dir, "array.yaml");
        await File.WriteAllTextAsync(file, $"image: {f.Busybox}\ncommand: [sh, -c, 'echo child $BATCHRUNNER_ARRAY_INDEX > /outputs/i.txt']\n" +
                                           "array:\n  size: 4\n  parallelism: 2\nresources:\n  cpus: 0.1\n  memory: 32Mi\n");
        var outDir = Path.Combine(_dir, "out");
        var r = await OkAsync("submit", file, "--wait", "--output-dir", outDir);
        Assert.Contains("array: 4 of 4 ended (4 succeeded, 0 failed, 0 cancelled)", r.Stderr);
        var parent = Submitted().Match(r.Stderr).Groups[1].Value;
        for (var i = 0; i < 4; i++) Assert.Equal($"child {i}\n", await File.ReadAllTextAsync(Path.Combine(outDir, i.ToString(), "i.txt")));

        var children = (await OkAsync("children", parent)).Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.StartsWith("INDEX", children[0]);
        Assert.Equal(["0", "1", "2", "3"], children.Skip(1).Select(l => l.Split(' ')[0]));
        Assert.All(children.Skip(1), l => Assert.Contains("succeeded", l));
        var page = JsonDocument.Parse((await OkAsync("children", parent, "--limit", "3", "-o", "json")).Stdout).RootElement;
        Assert.Equal(3, page.GetProperty("items").GetArrayLength());
        var rest = JsonDocument.Parse((await OkAsync("children", parent, "--cursor", page.GetProperty("nextCursor").GetString()!, "-o", "json")).Stdout).RootElement;
        Assert.Equal(3, rest.GetProperty("items")[0].GetProperty("arrayIndex").GetInt32());

        var status = (await OkAsync("status", parent)).Stdout;
        Assert.Contains("4 of 4 ended (4 succeeded", status);
        Assert.Contains($"index 2 of {parent}", (await OkAsync("status", $"{parent}:2")).Stdout);
        Assert.Contains("succeeded (4/4 ended)", (await OkAsync("list", "--limit", "20")).Stdout);
    }

    [Fact]
    public async Task Status_ShowsWaitingAndTheDependency_ThenDependencyFailedWhenItCanNoLongerHold()
    {
        var first = await f.SubmitAsync(new { image = f.Busybox, command = new[] { "sleep", "60" }, resources = new { cpus = 0.1, memory = "32Mi" } });
        var second = await f.SubmitAsync(new
        {
            image = f.Busybox, command = new[] { "true" }, resources = new { cpus = 0.1, memory = "32Mi" },
            dependsOn = new[] { new { job = first, condition = "succeeded" } },
        });

        var waiting = (await OkAsync("status", second)).Stdout;
        Assert.Matches(@"state:\s+waiting", waiting);
        Assert.Matches($@"depends on:\s+{first} \(succeeded\)", waiting);
        Assert.Contains(second, (await OkAsync("list", "--state", "waiting")).Stdout);

        await OkAsync("cancel", first);
        await Poll.UntilAsync(() => f.GetJobAsync(second), j => j.GetProperty("state").GetString() == "cancelled",
            TimeSpan.FromSeconds(30), "the dependent job to be cancelled", 200);
        var ended = (await OkAsync("status", second)).Stdout;
        Assert.Contains("dependency_failed", ended);
        Assert.Contains(first, ended[ended.IndexOf("message:", StringComparison.Ordinal)..]);
    }
}
