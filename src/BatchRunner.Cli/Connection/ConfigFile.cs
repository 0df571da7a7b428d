using System.Text.Json;
using System.Text.Json.Serialization;

namespace BatchRunner.Cli.Connection;

/// <summary>What <c>batchrunner login</c> saves: the server and its API key.</summary>
internal sealed record SavedLogin(
    [property: JsonPropertyName("url")] string? Url,
    [property: JsonPropertyName("apiKey")] string? ApiKey);

/// <summary>
/// The config file, <c>$XDG_CONFIG_HOME/batchrunner/config.json</c> (default <c>~/.config/batchrunner/config.json</c>).
/// Guarantees: the file is created with mode 0600 (never readable by others, not even for an instant) and replaced
/// atomically, so a crash leaves the old file or the new one, never half of one.
/// </summary>
internal static class ConfigFile
{
    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true };

    public static string DefaultPath(IReadOnlyDictionary<string, string?> env)
    {
        var xdg = env.GetValueOrDefault("XDG_CONFIG_HOME");
        var baseDir = !string.IsNullOrEmpty(xdg) && Path.IsPathRooted(xdg)
            ? xdg
            : Path.Combine(env.GetValueOrDefault("HOME") is { Length: > 0 } home ? home : Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".config");
        return Path.Combine(baseDir, "batchrunner", "config.json");
    }

    /// <summary>The saved login, or null when there is no file. A file that cannot be read is an error naming it.</summary>
    public static SavedLogin? Read(string path)
    {
        if (!File.Exists(path)) return null;
        try
        {
            return JsonSerializer.Deserialize<SavedLogin>(File.ReadAllText(path), Json);
        }
        catch (JsonException e)
        {
            throw new CliException($"config file {path} is not valid JSON ({e.Message}); fix it or run `batchrunner login` again");
        }
        catch (UnauthorizedAccessException e)
        {
            throw new CliException($"cannot read config file {path}: {e.Message}");
        }
    }

    public static void Write(string path, SavedLogin login)
    {
        var dir = Path.GetDirectoryName(path)!;
        var tmp = path + "." + Environment.ProcessId + ".tmp";
        var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
        if (OperatingSystem.IsWindows()) Directory.CreateDirectory(dir); // the profile directory is private already
        else
        {
            Directory.CreateDirectory(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        }
        try
        {
            using (var f = new FileStream(tmp, options))
            {
                JsonSerializer.Serialize(f, login, Json);
                f.Flush(flushToDisk: true);
            }
            // CreateNew applied the mode before any byte was written; the umask can only narrow it, so set it exactly.
            if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(tmp, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            File.Move(tmp, path, overwrite: true);
        }
        finally
        {
            if (File.Exists(tmp)) File.Delete(tmp);
        }
    }
}
