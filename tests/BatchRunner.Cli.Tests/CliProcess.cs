using System.Diagnostics;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Text;

namespace BatchRunner.Cli.Tests;

/// <summary>What one run of the CLI printed and how it exited.</summary>
public sealed record CliResult(int ExitCode, string Stdout, string Stderr)
{
    public override string ToString() => $"exit {ExitCode}\n--- stdout\n{Stdout}\n--- stderr\n{Stderr}";
}

/// <summary>
/// Runs the real <c>batchrunner</c> CLI as its own process, from its build output, the way <c>dotnet run --project
/// src/BatchRunner.Cli</c> and the installed tool run it: exit codes, signals, terminals and the environment are the
/// real ones. The environment is the test's own minus every BATCHRUNNER_*, NO_COLOR, TERM and XDG_CONFIG_HOME, plus what
/// the caller passes (HOME always points into a temp dir, so no test reads or writes a real config file).
/// </summary>
public static partial class CliProcess
{
    public static string RepositoryRoot { get; } = FindRoot();

    /// <summary>src/BatchRunner.Cli/bin/CONFIGURATION/net10.0/BatchRunner.Cli.dll, built with the tests (a project reference).</summary>
    public static string Dll { get; } = Path.Combine(RepositoryRoot, "src", "BatchRunner.Cli", "bin",
        typeof(CliProcess).Assembly.GetCustomAttribute<AssemblyConfigurationAttribute>()?.Configuration ?? "Release", "net10.0", "BatchRunner.Cli.dll");

    /// <summary>The command line that runs the CLI ("dotnet …/BatchRunner.Cli.dll"), for scripts (BATCHRUNNER_CLI).</summary>
    public static string CommandLine => $"dotnet {Dll}";

    public static ProcessStartInfo StartInfo(IEnumerable<string> args, IReadOnlyDictionary<string, string?> env, string? workDir = null)
    {
        var psi = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            WorkingDirectory = workDir ?? RepositoryRoot,
        };
        psi.ArgumentList.Add(Dll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        Prepare(psi, env);
        return psi;
    }

    public static void Prepare(ProcessStartInfo psi, IReadOnlyDictionary<string, string?> env)
    {
        foreach (var key in psi.Environment.Keys.ToList())
            if (key.StartsWith("BATCHRUNNER_", StringComparison.Ordinal) || key is "NO_COLOR" or "TERM" or "XDG_CONFIG_HOME")
                psi.Environment.Remove(key);
        psi.Environment["DOTNET_NOLOGO"] = "1";
        foreach (var (k, v) in env)
            if (v is null) psi.Environment.Remove(k);
            else psi.Environment[k] = v;
    }

    public static async Task<CliResult> RunAsync(IEnumerable<string> args, IReadOnlyDictionary<string, string?> env, string? stdin = null, TimeSpan? timeout = null, string? workDir = null)
    {
        using var p = Process.Start(StartInfo(args, env, workDir))!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (stdin is not null) await p.StandardInput.WriteAsync(stdin);
        p.StandardInput.Close();
        using var cts = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(90));
        try
        {
            await p.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"batchrunner {string.Join(' ', args)} did not end in time; stderr so far: {await stderr}");
        }
        return new CliResult(p.ExitCode, await stdout, await stderr);
    }

    /// <summary>
    /// Runs the CLI on a pseudo-terminal (util-linux <c>script</c>), as in an interactive shell: stdout and stderr are a
    /// terminal. Returns what the terminal received (both streams, with any escape sequences).
    /// </summary>
    public static async Task<CliResult> RunInTerminalAsync(IEnumerable<string> args, IReadOnlyDictionary<string, string?> env, TimeSpan? timeout = null)
    {
        var command = string.Join(' ', new[] { "dotnet", Dll }.Concat(args).Select(ShellQuote));
        var psi = new ProcessStartInfo("script")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            WorkingDirectory = RepositoryRoot,
        };
        foreach (var a in new[] { "-q", "-e", "-c", command, "/dev/null" }) psi.ArgumentList.Add(a);
        Prepare(psi, env);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        p.StandardInput.Close();
        using var cts = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(90));
        await p.WaitForExitAsync(cts.Token);
        return new CliResult(p.ExitCode, await stdout, await stderr);
    }

    public static string ShellQuote(string s) => "'" + s.Replace("'", "'\\''") + "'";

    /// <summary>Sends a signal to a process (Process.Kill only knows SIGKILL).</summary>
    public static void Signal(Process p, int signal)
    {
        if (Kill(p.Id, signal) != 0) throw new InvalidOperationException($"kill({p.Id}, {signal}) failed: errno {Marshal.GetLastPInvokeError()}");
    }

    public const int SIGINT = 2;

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int signal);

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "BatchRunner.sln"))) return dir.FullName;
        throw new InvalidOperationException("BatchRunner.sln not found above " + AppContext.BaseDirectory);
    }
}

/// <summary>Collects a running process's output lines as they come, to wait for one.</summary>
public sealed class OutputCollector
{
    private readonly StringBuilder _text = new();
    public void Attach(Process p, bool stdout)
    {
        DataReceivedEventHandler h = (_, e) => { if (e.Data is not null) lock (_text) _text.AppendLine(e.Data); };
        if (stdout) { p.OutputDataReceived += h; p.BeginOutputReadLine(); }
        else { p.ErrorDataReceived += h; p.BeginErrorReadLine(); }
    }
    public string Text { get { lock (_text) return _text.ToString(); } }
}
