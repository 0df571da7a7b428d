using BatchRunner.Testing;

namespace BatchRunner.Server.Tests;

/// <summary>Asks, as the host's nobody user (uid and gid 65534, no supplementary groups), which paths it can use.</summary>
public static class HostUserProbe
{
    public const uint NobodyId = 65534;

    /// <summary>
    /// The paths nobody can read: a file that cat reads, a directory that ls lists. Run through setpriv in one
    /// shell (the paths are arguments, never interpolated), with a world-readable file in /tmp as a control: the
    /// probe throws if nobody cannot read that, so an empty answer is never the probe failing.
    /// </summary>
    public static async Task<IReadOnlyList<string>> ReadableByNobodyAsync(IEnumerable<string> paths)
    {
        const string script = """
            for p; do
              if [ -d "$p" ]; then
                ls "$p" >/dev/null 2>&1 && printf '%s\n' "$p"
              else
                cat "$p" >/dev/null 2>&1 && printf '%s\n' "$p"
              fi
            done
            exit 0
            """;
        var control = Path.Combine("/tmp", "br-probe-control-" + Guid.NewGuid().ToString("N")[..8]);
        File.WriteAllText(control, "anyone may read this\n");
        File.SetUnixFileMode(control, (UnixFileMode)0b110_100_100);
        try
        {
            var output = await ExternalCommand.RunAsync("setpriv",
                ["--reuid=65534", "--regid=65534", "--clear-groups", "--", "/bin/sh", "-c", script, "probe", control, .. paths]);
            var readable = output.Split('\n', StringSplitOptions.RemoveEmptyEntries).ToList();
            if (!readable.Remove(control)) throw new InvalidOperationException($"the probe is broken: nobody could not read {control}");
            return readable;
        }
        finally { File.Delete(control); }
    }

    /// <summary>Every entry below <paramref name="dir"/> (not following symlinks), at most <paramref name="max"/>.</summary>
    public static IEnumerable<string> Tree(string dir, int max = 2000) =>
        new DirectoryInfo(dir)
            .EnumerateFileSystemInfos("*", new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = 0, IgnoreInaccessible = true })
            .Select(e => e.FullName)
            .Take(max);
}
