using System.Text.Json;

namespace BatchRunner.Cli.Tests;

/// <summary>Every failure is one clear line on stderr and a non-zero exit; <c>--output json</c> gives the API's JSON.</summary>
[Collection(CliCollection.Name)]
public sealed class CommandErrorFacts(CliFixture f) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("br-cli-errors-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task Command_FailsWithOneLineNamingTheKeysSource_WhenTheKeyIsWrong()
    {
        var r = await CliProcess.RunAsync(["list", "--api-key", "not-the-key"], f.Env());
        Assert.Equal(1, r.ExitCode);
        Assert.Equal("", r.Stdout);
        var line = Assert.Single(r.Stderr.TrimEnd().Split('\n'));
        Assert.Contains("refused the API key from --api-key (401", line);
    }

    [Fact]
    public async Task Command_FailsWithOneLineNamingTheUrl_WhenTheServerIsUnreachable()
    {
        var r = await CliProcess.RunAsync(["status", "x"], f.Env(("BATCHRUNNER_URL", "http://127.0.0.1:1")));
        Assert.Equal(1, r.ExitCode);
        var line = Assert.Single(r.Stderr.TrimEnd().Split('\n'));
        Assert.Contains("cannot reach BatchRunner at http://127.0.0.1:1/ (connection refused)", line);
        Assert.Contains("BATCHRUNNER_URL", line);
        // run: the job could not start, as docker run says it.
        Assert.Equal(125, (await CliProcess.RunAsync(["run", "busybox"], f.Env(("BATCHRUNNER_URL", "http://127.0.0.1:1")))).ExitCode);
    }

    [Fact]
    public async Task Submit_ListsEveryFieldTheServerRefused_WhenTheSpecIsInvalid()
    {
        var job = Path.Combine(_dir, "bad.yaml");
        await File.WriteAllTextAsync(job, $"image: {f.Busybox}\nresources:\n  memory: lots\ntimeoutSeconds: -5\n");
        var r = await CliProcess.RunAsync(["submit", job], f.Env());
        Assert.Equal(1, r.ExitCode);
        var lines = r.Stderr.TrimEnd().Split('\n');
        Assert.StartsWith("batchrunner: The job spec is invalid (400)", lines[0]);
        Assert.Contains(lines, l => l.StartsWith("  resources.memory: ", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.StartsWith("  timeoutSeconds: ", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Status_SaysNoSuchJob_WhenTheIdIsUnknown()
    {
        var id = Guid.NewGuid().ToString();
        var r = await f.RunAsync("status", id);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains($"no job with id \"{id}\"", Assert.Single(r.Stderr.TrimEnd().Split('\n')));
    }

    [Fact]
    public async Task Commands_PrintTheApisJson_WhenOutputIsJson()
    {
        var tag = Guid.NewGuid().ToString("N")[..8];
        var id = await f.SubmitAsync(new { image = f.Busybox, command = new[] { "sh", "-c", "echo out; echo x > /outputs/f.txt" }, labels = new { cli = tag } });
        var wait = await f.RunAsync("submit", "--help"); // any command; the job finishes meanwhile
        Assert.Equal(0, wait.ExitCode);
        await BatchRunner.Testing.Poll.UntilAsync(() => f.GetJobAsync(id), j => j.GetProperty("state").GetString() == "succeeded", TimeSpan.FromSeconds(60), "job end");

        var status = JsonDocument.Parse((await f.RunAsync("status", id, "-o", "json")).Stdout).RootElement;
        Assert.Equal(id, status.GetProperty("id").GetString());
        Assert.Equal(1, status.GetProperty("attempts").GetArrayLength());
        var list = JsonDocument.Parse((await f.RunAsync("list", "--limit", "5", "--output", "json")).Stdout).RootElement;
        Assert.Contains(list.GetProperty("items").EnumerateArray(), j => j.GetProperty("id").GetString() == id);
        // Filters narrow (and the CLI lists the summary view: no command lines).
        var mine = JsonDocument.Parse((await f.RunAsync("list", "--label", $"cli={tag}", "--state", "succeeded,failed", "-o", "json")).Stdout).RootElement;
        Assert.Equal(id, Assert.Single(mine.GetProperty("items").EnumerateArray()).GetProperty("id").GetString());
        Assert.False(mine.GetProperty("items")[0].TryGetProperty("command", out _));
        var rerun = (await f.RunAsync("rerun", id)).Stdout.Trim();
        Assert.Equal(id, JsonDocument.Parse((await f.RunAsync("status", rerun, "-o", "json")).Stdout).RootElement.GetProperty("rerunOf").GetString());
        var outputs = JsonDocument.Parse((await f.RunAsync("outputs", id, "-o", "json")).Stdout).RootElement;
        Assert.Equal("f.txt", outputs[0].GetProperty("path").GetString());
        var nodes = JsonDocument.Parse((await f.RunAsync("nodes", "-o", "json")).Stdout).RootElement;
        Assert.True(nodes.GetArrayLength() >= 1);
        Assert.Equal("out\n", (await f.RunAsync("logs", id, "--stream", "stdout")).Stdout);
        Assert.Matches(@"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z out\n$", (await f.RunAsync("logs", id, "-t")).Stdout);
        // Text too: the id and state in the human view, and a table with a header.
        var text = await f.RunAsync("status", id);
        Assert.Contains("state:", text.Stdout);
        Assert.Contains("succeeded", text.Stdout);
        Assert.StartsWith("ID ", (await f.RunAsync("list")).Stdout);
    }

    [Fact]
    public async Task Cancel_SaysTheJobAlreadyEnded_WhenItHas()
    {
        var id = await f.SubmitAsync(new { image = f.Busybox, command = new[] { "true" } });
        await BatchRunner.Testing.Poll.UntilAsync(() => f.GetJobAsync(id), j => j.GetProperty("state").GetString() == "succeeded", TimeSpan.FromSeconds(60), "job end");
        var r = await f.RunAsync("cancel", id);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("(409)", Assert.Single(r.Stderr.TrimEnd().Split('\n')));
    }

    [Fact]
    public async Task Login_SavesAVerifiedKeyWithMode0600_ThatLaterCommandsUse()
    {
        var home = Path.Combine(_dir, "home");
        var xdg = Path.Combine(_dir, "xdg");
        var bare = new Dictionary<string, string?> { ["HOME"] = home, ["XDG_CONFIG_HOME"] = xdg };

        var refused = await CliProcess.RunAsync(["login", "--url", f.Url, "--api-key-stdin"], bare, stdin: "wrong-key\n");
        Assert.Equal(1, refused.ExitCode);
        Assert.False(File.Exists(Path.Combine(xdg, "batchrunner", "config.json")), "a refused key is not saved");

        var login = await CliProcess.RunAsync(["login", "--url", f.Url, "--api-key-stdin"], bare, stdin: CliFixture.ApiKey + "\n");
        Assert.True(login.ExitCode == 0, login.ToString());
        var config = Path.Combine(xdg, "batchrunner", "config.json");
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, OperatingSystem.IsWindows() ? default : File.GetUnixFileMode(config));
        Assert.Contains(CliFixture.ApiKey, await File.ReadAllTextAsync(config));

        var list = await CliProcess.RunAsync(["list", "-o", "json"], bare); // no flag, no variable: the config file
        Assert.True(list.ExitCode == 0, list.ToString());
        // A variable still beats the file.
        var overridden = await CliProcess.RunAsync(["list"], new Dictionary<string, string?>(bare) { ["BATCHRUNNER_API_KEY"] = "env-key" });
        Assert.Contains("refused the API key from BATCHRUNNER_API_KEY", overridden.Stderr);
    }

    [Fact]
    public async Task Completion_PrintsABashScript_AndCompletesCommandsAndOptions()
    {
        var script = await f.RunAsync("completion", "bash");
        Assert.Contains("complete -o default -F _batchrunner_complete batchrunner", script.Stdout);
        var commands = await f.RunAsync("__complete", "--position", "14", "batchrunner ru");
        Assert.Contains("run", commands.Stdout.Split('\n'));
        var options = await f.RunAsync("__complete", "--position", "20", "batchrunner run --me");
        Assert.Contains("--memory", options.Stdout.Split('\n'));
    }

    [Fact]
    public async Task Images_ImportsListsAndRemovesAnImage_FromAnArchiveFile()
    {
        var archive = Path.Combine(_dir, "layout.tar");
        await BatchRunner.Testing.ExternalCommand.RunAsync("tar", ["-C", await BatchRunner.Testing.TestImages.LayoutAsync(), "-cf", archive, "."]);
        // The layout holds several images: the name's tag picks one ("busybox").
        var import = await f.RunAsync("images", "import", archive, "--name", "cli/imported:busybox");
        Assert.True(import.ExitCode == 0, import.ToString());
        Assert.Contains("imported docker.io/cli/imported:busybox (sha256:", import.Stderr);
        var list = await f.RunAsync("images", "list", "-o", "json");
        Assert.Contains(JsonDocument.Parse(list.Stdout).RootElement.EnumerateArray(), i => i.GetProperty("name").GetString() == "docker.io/cli/imported:busybox");
        var rm = await f.RunAsync("images", "rm", "cli/imported:busybox");
        Assert.True(rm.ExitCode == 0, rm.ToString());
        var again = await f.RunAsync("images", "rm", "cli/imported:busybox");
        Assert.Equal(1, again.ExitCode);
        Assert.Contains("(404)", again.Stderr);
    }
}
