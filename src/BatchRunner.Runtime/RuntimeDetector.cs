using System.Text.RegularExpressions;
using BatchRunner.Runtime.Cgroups;
using BatchRunner.Runtime.Spec;

namespace BatchRunner.Runtime;

/// <summary>The OCI runtime chosen for this host and why (the caller logs <see cref="Reason"/>).</summary>
public sealed record RuntimeSelection(string Name, string Path, string Version, string Reason);

public sealed class RuntimeDetectionException(string message) : Exception(message);

/// <summary>
/// Chooses the OCI runtime from a setting: "auto", "runc", "crun", or a path to a binary.
/// "auto" prefers crun on pure cgroup v2 hosts (about twice as fast to start) and runc otherwise.
/// A runtime is only chosen after `X --version` answers; crun is also checked, on v1/hybrid hosts, by
/// starting a probe container, since crun refuses hybrid cgroups ("cgroups in hybrid mode not
/// supported") only when a container is created. A crun that fails a check falls back to runc with the
/// reason. Both are driven the same way (`run --detach`, see <see cref="RuncRuntime"/>), so no
/// `run --keep` is needed: crun 1.8.1 (Debian 12) qualifies.
/// </summary>
public sealed partial class RuntimeDetector(CgroupVersion cgroupVersion, Func<string, string?>? findOnPath = null)
{
    private static readonly TimeSpan CommandTimeout = TimeSpan.FromSeconds(20);
    private readonly Func<string, string?> _which = findOnPath ?? FindOnPath;

    public RuntimeDetector() : this(CgroupVersionDetector.Detect()) { }

    public async Task<RuntimeSelection> DetectAsync(string setting, CancellationToken ct)
    {
        setting = string.IsNullOrWhiteSpace(setting) ? "auto" : setting.Trim();
        switch (setting)
        {
            case "auto":
            {
                if (cgroupVersion != CgroupVersion.V2)
                    return await RuncAsync($"cgroup {Describe(cgroupVersion)} host: runc (crun is only chosen automatically on pure cgroup v2)", ct);
                var crun = _which("crun");
                if (crun is null) return await RuncAsync("cgroup v2 host, but crun is not installed", ct);
                return await TryCrunAsync(crun, "cgroup v2 host", ct);
            }
            case "runc":
                return await RuncAsync("configured: runc", ct);
            case "crun":
            {
                var crun = _which("crun") ?? throw new RuntimeDetectionException("runtime \"crun\" is configured but not found on PATH");
                return await TryCrunAsync(crun, "configured: crun", ct);
            }
            default:
            {
                if (!setting.StartsWith('/')) throw new RuntimeDetectionException($"runtime setting \"{setting}\" is not auto, runc, crun or an absolute path");
                var (name, version) = await VersionAsync(setting, ct);
                if (name == "crun") return await TryCrunAsync(setting, $"configured: {setting}", ct);
                return new RuntimeSelection(name, setting, version, $"configured: {setting}");
            }
        }
    }

    private async Task<RuntimeSelection> RuncAsync(string reason, CancellationToken ct)
    {
        var runc = _which("runc") ?? throw new RuntimeDetectionException($"no usable OCI runtime: runc is not found on PATH ({reason})");
        var (_, version) = await VersionAsync(runc, ct);
        return new RuntimeSelection("runc", runc, version, reason);
    }

    private async Task<RuntimeSelection> TryCrunAsync(string crun, string why, CancellationToken ct)
    {
        string version;
        try { (_, version) = await VersionAsync(crun, ct); }
        catch (RuntimeDetectionException e) { return await RuncAsync($"{why}; crun unusable ({e.Message}), using runc", ct); }

        if (cgroupVersion != CgroupVersion.V2)
        {
            var refusal = await ProbeAsync(crun, ct);
            if (refusal is not null)
                return await RuncAsync($"{why}; crun {version} refuses this {Describe(cgroupVersion)} cgroup host ({refusal}), using runc", ct);
        }

        return new RuntimeSelection("crun", crun, version, $"{why}: crun {version}");
    }

    /// <summary>Parses "runc version 1.1.5+ds1" / "crun version 1.8.1" from `X --version`.</summary>
    public static async Task<(string Name, string Version)> VersionAsync(string path, CancellationToken ct)
    {
        CommandResult r;
        try { r = await Command.RunAsync(path, ["--version"], CommandTimeout, ct); }
        catch (System.ComponentModel.Win32Exception e) { throw new RuntimeDetectionException($"{path}: {e.Message}"); }
        if (!r.Ok) throw new RuntimeDetectionException($"{path} --version failed (exit {r.ExitCode}): {r.Message}");
        var m = VersionLine().Match(r.Stdout);
        if (!m.Success) throw new RuntimeDetectionException($"{path} --version printed no \"NAME version X\" line: {r.Stdout.Trim()}");
        return (m.Groups[1].Value, m.Groups[2].Value);
    }

    [GeneratedRegex(@"^(\S+) version (\S+)", RegexOptions.Multiline)]
    private static partial Regex VersionLine();

    /// <summary>
    /// Starts a container whose program does not exist, with limits set: a runtime that gets as far as
    /// looking for the program has set up cgroups and namespaces. Returns null when it did, else the
    /// runtime's error text.
    /// </summary>
    internal static async Task<string?> ProbeAsync(string runtime, CancellationToken ct)
    {
        const string missing = "/batchrunner-probe-missing";
        var id = "br-probe-" + Guid.NewGuid().ToString("N")[..12];
        var dir = System.IO.Path.Combine(System.IO.Path.GetTempPath(), id);
        var rootfs = System.IO.Path.Combine(dir, "rootfs");
        var state = System.IO.Path.Combine(dir, "state");
        Directory.CreateDirectory(rootfs);
        try
        {
            var spec = SpecBuilder.ForContainer(new ContainerSpec
            {
                Id = id, RootfsPath = rootfs, Args = [missing], ReadonlyRootfs = true,
                MemoryLimitBytes = 64 << 20, PidsLimit = 16, Cpus = 0.5,
            });
            await File.WriteAllTextAsync(System.IO.Path.Combine(dir, RuncRuntime.ConfigFile), spec.ToJson(), ct);
            var r = await Command.RunAsync(runtime, ["--root", state, "run", "--bundle", dir, id], CommandTimeout, ct);
            await Command.RunAsync(runtime, ["--root", state, "delete", "--force", id], CommandTimeout, ct);
            return r.Ok || (r.Stdout + r.Stderr).Contains(missing, StringComparison.Ordinal) ? null : r.Message;
        }
        finally
        {
            try
            {
                var cleaner = new CgroupCleaner(CgroupVersionDetector.Detect());
                await cleaner.RemoveAsync(SpecBuilder.CgroupParent, id, TimeSpan.FromSeconds(5), CancellationToken.None);
            }
            catch (Exception e) when (e is IOException or InvalidOperationException) { }
            Directory.Delete(dir, recursive: true);
        }
    }

    private static string Describe(CgroupVersion v) => v switch
    {
        CgroupVersion.V1 => "v1",
        CgroupVersion.Hybrid => "hybrid (v1 controllers + v2 mount)",
        _ => "v2",
    };

    public static string? FindOnPath(string name)
    {
        var dirs = (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Concat(["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]);
        foreach (var d in dirs)
        {
            var p = System.IO.Path.Combine(d, name);
            if (!OperatingSystem.IsWindows() && File.Exists(p) && (File.GetUnixFileMode(p) & (UnixFileMode.UserExecute | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute)) != 0)
                return p;
        }
        return null;
    }
}
