using BatchRunner.Cli.Connection;

namespace BatchRunner.Cli.Tests;

/// <summary>Where the server URL and key come from, and the exit code that stands for each job outcome.</summary>
public sealed class SettingsFacts : IDisposable
{
    private readonly string _home = Directory.CreateTempSubdirectory("br-cli-settings-").FullName;

    public void Dispose() => Directory.Delete(_home, recursive: true);

    private Dictionary<string, string?> Env(params (string, string?)[] vars)
    {
        var env = new Dictionary<string, string?> { ["HOME"] = _home };
        foreach (var (k, v) in vars) env[k] = v;
        return env;
    }

    [Fact]
    public void Resolve_PrefersFlagsThenEnvironmentThenConfigFile()
    {
        var env = Env(("BATCHRUNNER_URL", "http://env:1"), ("BATCHRUNNER_API_KEY", "env-key"));
        var config = ConfigFile.DefaultPath(env);
        ConfigFile.Write(config, new SavedLogin("http://file:2", "file-key"));

        var flags = ServerSettings.Resolve("http://flag:3", "flag-key", env, config);
        Assert.Equal(("http://flag:3/", "--url", "flag-key", "--api-key"), (flags.Url.ToString(), flags.UrlSource, flags.ApiKey, flags.ApiKeySource));
        var fromEnv = ServerSettings.Resolve(null, null, env, config);
        Assert.Equal(("http://env:1/", "env-key"), (fromEnv.Url.ToString(), fromEnv.ApiKey));
        var fromFile = ServerSettings.Resolve(null, null, Env(), config);
        Assert.Equal(("http://file:2/", "file-key", config), (fromFile.Url.ToString(), fromFile.ApiKey, fromFile.ApiKeySource));
        var none = ServerSettings.Resolve(null, null, Env(), Path.Combine(_home, "absent.json"));
        Assert.Equal((ServerSettings.DefaultUrl + "/", null), (none.Url.ToString(), none.ApiKey));
    }

    [Fact]
    public void DefaultPath_HonoursXdgConfigHome_ElseUsesHomeDotConfig()
    {
        Assert.Equal(Path.Combine(_home, ".config", "batchrunner", "config.json"), ConfigFile.DefaultPath(Env()));
        Assert.Equal("/x/y/batchrunner/config.json", ConfigFile.DefaultPath(Env(("XDG_CONFIG_HOME", "/x/y"))));
    }

    [Fact]
    public void Write_CreatesTheFileReadableByItsOwnerOnly()
    {
        var path = ConfigFile.DefaultPath(Env());
        ConfigFile.Write(path, new SavedLogin("http://a:1", "k"));
        ConfigFile.Write(path, new SavedLogin("http://a:1", "k2")); // replaced, still 0600
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, OperatingSystem.IsWindows() ? default : File.GetUnixFileMode(path));
        Assert.Equal("k2", ConfigFile.Read(path)!.ApiKey);
        Assert.Single(Directory.GetFiles(Path.GetDirectoryName(path)!)); // no temp file left
    }

    [Theory]
    [InlineData("ftp://x")]
    [InlineData("http://")]
    public void ParseUrl_RefusesWhatIsNotAnHttpUrl(string url) =>
        Assert.Contains("is not an http(s) URL", Assert.Throws<CliException>(() => ServerSettings.ParseUrl(url, "--url")).Message);

    [Theory]
    [InlineData("succeeded", null, 0, 0)]
    [InlineData("failed", "exit_code", 3, 3)]
    [InlineData("failed", "oom_killed", 137, 137)]
    [InlineData("failed", "oom_killed", 0, 137)]
    [InlineData("failed", "timed_out", null, 124)]
    [InlineData("failed", "image_pull_failed", null, 125)]
    [InlineData("failed", "start_failed", null, 125)]
    [InlineData("failed", "node_lost", null, 1)]
    [InlineData("cancelled", "cancelled", null, 130)]
    public void ForJob_GivesTheJobsCodeOrTheOneThatStandsForItsReason(string state, string? reason, int? exitCode, int expected)
    {
        var json = System.Text.Json.JsonSerializer.SerializeToElement(new { id = "x", state, reason, exitCode });
        Assert.Equal(expected, ExitCodes.ForJob(new JobView(json)));
    }

    [Theory]
    [InlineData("90", 90)]
    [InlineData("90s", 90)]
    [InlineData("15m", 900)]
    [InlineData("1h30m", 5400)]
    public void Seconds_ReadsPlainSecondsAndDurations(string text, int seconds) =>
        Assert.Equal(seconds, Jobs.KeyValues.Seconds(text, "--timeout"));
}
