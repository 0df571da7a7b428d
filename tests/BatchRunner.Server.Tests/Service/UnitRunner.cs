using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using BatchRunner.Server.Tests.Observability;
using BatchRunner.Testing;

namespace BatchRunner.Server.Tests.Service;

/// <summary>The [Service] section of a systemd unit file, as written by scripts/install-service.sh.</summary>
public sealed record SystemdUnit(string Path, IReadOnlyDictionary<string, IReadOnlyList<string>> Service)
{
    public static SystemdUnit Read(string path)
    {
        var service = new Dictionary<string, List<string>>();
        string? section = null;
        foreach (var raw in File.ReadAllLines(path))
        {
            var line = raw.Trim();
            if (line.Length == 0 || line[0] is '#' or ';') continue;
            if (line.StartsWith('[')) { section = line; continue; }
            if (section != "[Service]") continue;
            var eq = line.IndexOf('=');
            var key = line[..eq].Trim();
            if (!service.TryGetValue(key, out var values)) service[key] = values = [];
            values.Add(line[(eq + 1)..].Trim());
        }
        return new SystemdUnit(path, service.ToDictionary(kv => kv.Key, kv => (IReadOnlyList<string>)kv.Value));
    }

    public string? Value(string key) => Service.TryGetValue(key, out var v) ? v[^1] : null;

    public string Required(string key) => Value(key) ?? throw new Xunit.Sdk.XunitException($"{Path} has no {key}=");

    /// <summary>What systemd puts in the environment of ExecStart: its own PATH, Environment= and then EnvironmentFile= (which wins).</summary>
    public Dictionary<string, string> ServiceEnvironment()
    {
        // systemd's default PATH for system services; no HOME, USER or LANG without User=.
        var env = new Dictionary<string, string> { ["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin" };
        foreach (var assignment in Service.GetValueOrDefault("Environment") ?? [])
        {
            var eq = assignment.IndexOf('=');
            env[assignment[..eq]] = assignment[(eq + 1)..];
        }
        foreach (var file in Service.GetValueOrDefault("EnvironmentFile") ?? [])
            foreach (var (k, v) in ReadEnvironmentFile(file.TrimStart('-')))
                env[k] = v;
        return env;
    }

    /// <summary>KEY=VALUE lines of a systemd EnvironmentFile (comments skipped, one level of quotes removed).</summary>
    public static Dictionary<string, string> ReadEnvironmentFile(string path)
    {
        var env = new Dictionary<string, string>();
        foreach (var raw in File.ReadAllLines(path))
        {
            var line = raw.Trim();
            if (line.Length == 0 || line[0] is '#' or ';') continue;
            var eq = line.IndexOf('=');
            var value = line[(eq + 1)..].Trim();
            if (value.Length >= 2 && (value[0] is '"' or '\'') && value[^1] == value[0]) value = value[1..^1];
            env[line[..eq].Trim()] = value;
        }
        return env;
    }
}

/// <summary>A unix datagram socket in a temp directory, standing in for systemd's notify socket.</summary>
public sealed class NotifySocket : IDisposable
{
    private readonly Socket _socket = new(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
    private readonly string _dir = Directory.CreateTempSubdirectory("br-notify-").FullName;

    public NotifySocket()
    {
        Path = System.IO.Path.Combine(_dir, "notify");
        _socket.Bind(new UnixDomainSocketEndPoint(Path));
    }

    public string Path { get; }

    /// <summary>The next message (e.g. "READY=1"), or a timeout naming what was awaited.</summary>
    public async Task<string> ReceiveAsync(TimeSpan timeout, string what)
    {
        using var cts = new CancellationTokenSource(timeout);
        var buffer = new byte[4096];
        try
        {
            var n = await _socket.ReceiveAsync(buffer, SocketFlags.None, cts.Token);
            return Encoding.UTF8.GetString(buffer, 0, n);
        }
        catch (OperationCanceledException)
        {
            throw new TimeoutException($"no notify message within {timeout.TotalSeconds:0} s while waiting for {what}");
        }
    }

    public void Dispose()
    {
        _socket.Dispose();
        Directory.Delete(_dir, recursive: true);
    }
}

/// <summary>
/// Runs a unit's ExecStart as systemd would: in a cgroup of its own (on the cgroup2 hierarchy, where
/// systemd tracks a unit's processes), from /, with only the unit's environment plus NOTIFY_SOCKET and
/// INVOCATION_ID, stdin closed, stdout and stderr to a file (the journal). <see cref="KillCgroup"/> does
/// what systemd does to a unit's cgroup when the main process is gone (KillMode=mixed): SIGKILL to every
/// process left in it.
/// </summary>
public sealed class UnitProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly string _cgroup;

    private UnitProcess(Process process, string cgroup, string logFile)
    {
        _process = process;
        _cgroup = cgroup;
        LogFile = logFile;
    }

    public string LogFile { get; }
    public int Pid => _process.Id;
    public bool HasExited => _process.HasExited;
    public int ExitCode => _process.ExitCode;

    public static UnitProcess Start(SystemdUnit unit, NotifySocket notify, string logFile)
    {
        var cgroup = System.IO.Path.Combine(Cgroup2Mount(), "br-test-unit-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(cgroup);
        var psi = new ProcessStartInfo("/bin/sh") { UseShellExecute = false, RedirectStandardInput = true, WorkingDirectory = "/" };
        // The shell joins the cgroup, then becomes ExecStart (same pid: the unit's main process).
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add("cg=$0; log=$1; shift; echo $$ > \"$cg/cgroup.procs\" && exec \"$@\" >>\"$log\" 2>&1");
        psi.ArgumentList.Add(cgroup);
        psi.ArgumentList.Add(logFile);
        foreach (var word in unit.Required("ExecStart").Split(' ', StringSplitOptions.RemoveEmptyEntries)) psi.ArgumentList.Add(word);
        psi.Environment.Clear();
        foreach (var (k, v) in unit.ServiceEnvironment()) psi.Environment[k] = v;
        psi.Environment["NOTIFY_SOCKET"] = notify.Path;
        psi.Environment["INVOCATION_ID"] = Guid.NewGuid().ToString("N");
        var process = Process.Start(psi)!;
        process.StandardInput.Close();
        return new UnitProcess(process, cgroup, logFile);
    }

    public void Terminate() => UnixSignals.Send(_process.Id, UnixSignals.Term);

    /// <summary>SIGKILL to the main process only (a crash); the rest of its cgroup lives on until <see cref="KillCgroupAsync"/>.</summary>
    public void KillMain() => UnixSignals.Send(_process.Id, UnixSignals.Kill);

    public async Task<int> WaitForExitAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        try { await _process.WaitForExitAsync(cts.Token); }
        catch (OperationCanceledException) { throw new TimeoutException($"the service did not exit within {timeout.TotalSeconds:0} s:\n{Log()}"); }
        return _process.ExitCode;
    }

    /// <summary>Pids left in the unit's cgroup.</summary>
    public IReadOnlyList<int> CgroupPids() =>
        File.Exists(System.IO.Path.Combine(_cgroup, "cgroup.procs"))
            ? File.ReadAllLines(System.IO.Path.Combine(_cgroup, "cgroup.procs")).Where(l => l.Length > 0).Select(int.Parse).ToList()
            : [];

    /// <summary>SIGKILL to every process of the unit's cgroup, until it is empty: all at once first (<c>cgroup.kill</c>, as
    /// systemd does on cgroup v2), so that none of them (the container watchdog) sees another die and acts before its own
    /// end, as one by one it could under load.</summary>
    public async Task KillCgroupAsync()
    {
        var kill = System.IO.Path.Combine(_cgroup, "cgroup.kill");
        if (File.Exists(kill)) await File.WriteAllTextAsync(kill, "1");
        await Poll.UntilAsync(() =>
        {
            var pids = CgroupPids();
            foreach (var pid in pids) UnixSignals.Send(pid, UnixSignals.Kill);
            return Task.FromResult(pids.Count);
        }, n => n == 0, TimeSpan.FromSeconds(20), "the unit's cgroup to empty", 50);
        await _process.WaitForExitAsync();
    }

    public string Log() => File.Exists(LogFile) ? File.ReadAllText(LogFile) : "(no log)";

    public async ValueTask DisposeAsync()
    {
        if (Directory.Exists(_cgroup))
        {
            await KillCgroupAsync();
            Directory.Delete(_cgroup);
        }
        _process.Dispose();
    }

    /// <summary>Where cgroup2 is mounted: the cgroup root on v2 hosts, /sys/fs/cgroup/unified on hybrid ones.</summary>
    private static string Cgroup2Mount()
    {
        foreach (var line in File.ReadLines("/proc/self/mountinfo"))
        {
            var sep = line.IndexOf(" - ", StringComparison.Ordinal);
            if (sep < 0 || !line[(sep + 3)..].StartsWith("cgroup2 ", StringComparison.Ordinal)) continue;
            return line[..sep].Split(' ')[4];
        }
        throw new InvalidOperationException("no cgroup2 hierarchy is mounted: cannot run a unit's processes in a cgroup of their own");
    }
}

/// <summary>Runs a program or a repository script (by its path from the repository root), returning its exit code and output.</summary>
public static class RepoScript
{
    /// <param name="environment">When given, the whole environment (as a service manager gives it); else this process's.</param>
    public static async Task<(int ExitCode, string Stdout, string Stderr)> RunAsync(string file, IEnumerable<string> args,
        IReadOnlyDictionary<string, string>? environment = null, TimeSpan? timeout = null, string workingDirectory = "/")
    {
        var psi = new ProcessStartInfo(file.StartsWith('/') ? file : System.IO.Path.Combine(RepoPaths.Root, file))
        {
            UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = workingDirectory,
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        if (environment is not null)
        {
            psi.Environment.Clear();
            foreach (var (k, v) in environment) psi.Environment[k] = v;
        }
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(timeout ?? TimeSpan.FromMinutes(2));
        await p.WaitForExitAsync(cts.Token);
        return (p.ExitCode, await stdout, await stderr);
    }

    /// <summary>Runs the script and fails the test with its output unless it exits 0.</summary>
    public static async Task<string> RunOkAsync(string script, params string[] args)
    {
        var (code, stdout, stderr) = await RunAsync(script, args);
        Assert.True(code == 0, $"{script} {string.Join(' ', args)} exited {code}:\n{stdout}\n{stderr}");
        return stdout;
    }
}
