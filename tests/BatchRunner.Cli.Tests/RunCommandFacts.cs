using System.Diagnostics;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.RegularExpressions;
using BatchRunner.Testing;

namespace BatchRunner.Cli.Tests;

/// <summary><c>batchrunner run</c> against a real server, registry and runc, the CLI as its own process.</summary>
[Collection(CliCollection.Name)]
public sealed partial class RunCommandFacts(CliFixture f) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("br-cli-run-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task Run_StreamsTheLogsAndExitsZero_WhenTheJobSucceeds()
    {
        var r = await f.RunAsync("run", f.Busybox, "--", "sh", "-c", "echo hello; echo to-stderr >&2");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Equal("hello\n", r.Stdout); // stdout carries the job's stdout and nothing else
        Assert.Contains("to-stderr", r.Stderr);
        Assert.Matches(@"job \S+ succeeded", r.Stderr);
        // Not a terminal: plain lines, no escape sequence at all.
        Assert.DoesNotContain('\u001b', r.Stdout + r.Stderr);
    }

    [Fact]
    public async Task Run_ExitsWithTheJobsOwnCode_WhenTheJobFails()
    {
        var r = await f.RunAsync("run", f.Busybox, "--", "sh", "-c", "echo something broke >&2; exit 3");
        Assert.True(r.ExitCode == 3, r.ToString());
        Assert.Contains("something broke", r.Stderr);
        Assert.Contains("exit_code (exit code 3)", r.Stderr);
    }

    [Fact]
    public async Task Run_Exits137_WhenTheJobIsOomKilled()
    {
        var r = await f.RunAsync("run", "--memory", "16Mi", f.Busybox, "--", "sh", "-c", "dd if=/dev/zero of=/dev/null bs=64M count=1");
        Assert.True(r.ExitCode == 137, r.ToString());
        Assert.Contains("oom_killed", r.Stderr);
    }

    [Fact]
    public async Task Run_Exits125AndPrintsTheReason_WhenTheImageDoesNotExist()
    {
        var r = await f.RunAsync("run", $"{f.Registry.Host}/demo/missing:1", "--", "true");
        Assert.True(r.ExitCode == 125, r.ToString());
        Assert.Contains("image_pull_failed", r.Stderr);
        Assert.Contains("demo/missing", r.Stderr); // the server's message names the image
    }

    [Fact]
    public async Task Run_PrintsTheFinalJobDocument_WhenOutputIsJson()
    {
        var r = await f.RunAsync("run", "-o", "json", "--name", "json-run", "--label", "team=cli", f.Busybox, "--", "echo", "in-the-log");
        Assert.True(r.ExitCode == 0, r.ToString());
        var job = JsonDocument.Parse(r.Stdout).RootElement; // stdout is the API's JSON alone
        Assert.Equal("succeeded", job.GetProperty("state").GetString());
        Assert.Equal("json-run", job.GetProperty("name").GetString());
        Assert.Equal("cli", job.GetProperty("labels").GetProperty("team").GetString());
        Assert.Equal(0, job.GetProperty("exitCode").GetInt32());
        Assert.Contains("in-the-log", r.Stderr); // the job's stdout went to stderr
    }

    [Fact]
    public async Task Run_PutsADirectoryUnderInputsByItsName_WhenInputIsADirectory()
    {
        var data = Path.Combine(_dir, "dataset");
        Directory.CreateDirectory(Path.Combine(data, "part"));
        await File.WriteAllTextAsync(Path.Combine(data, "top.txt"), "top\n");
        await File.WriteAllTextAsync(Path.Combine(data, "part", "inner.csv"), "a,b\n1,2\n");
        var single = Path.Combine(_dir, "single.txt");
        await File.WriteAllTextAsync(single, "single\n");

        var r = await f.RunAsync("run", "--input", data, "-i", single, f.Busybox, "--",
            "sh", "-c", "cd /inputs && find . -type f | sort && cat dataset/part/inner.csv single.txt");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Equal("./dataset/part/inner.csv\n./dataset/top.txt\n./single.txt\na,b\n1,2\nsingle\n", r.Stdout);
    }

    [Fact]
    public async Task Run_DownloadsTheOutputsWithMatchingSha256_WhenOutputDirIsGiven()
    {
        var outDir = Path.Combine(_dir, "out");
        var r = await f.RunAsync("run", "--output-dir", outDir, f.Busybox, "--", "sh", "-c",
            "echo 42 > /outputs/answer.txt; mkdir -p /outputs/sub; head -c 300000 /dev/urandom > /outputs/sub/random.bin");
        Assert.True(r.ExitCode == 0, r.ToString());
        var id = Regex.Match(r.Stderr, @"job (\S+) submitted").Groups[1].Value;
        var listed = (await f.GetJobAsync(id)).GetProperty("outputs").EnumerateArray()
            .ToDictionary(o => o.GetProperty("path").GetString()!, o => o.GetProperty("sha256").GetString()!);
        Assert.Equal(["answer.txt", "sub/random.bin"], listed.Keys.Order());
        foreach (var (path, sha) in listed)
            Assert.Equal(sha, Convert.ToHexStringLower(SHA256.HashData(await File.ReadAllBytesAsync(Path.Combine(outDir, path)))));
        Assert.Equal("42\n", await File.ReadAllTextAsync(Path.Combine(outDir, "answer.txt")));
        Assert.Empty(Directory.GetFiles(outDir, "*.partial", SearchOption.AllDirectories));
    }

    [Fact]
    public async Task Run_CancelsTheJobAndExits130_WhenInterrupted()
    {
        // A process started in the background by a non-interactive shell (scripts/test.sh under `cmd &`) ignores SIGINT,
        // and .NET keeps an inherited SIG_IGN as a shell's background job would: the CLI gets SIGINT's default back,
        // as in a terminal, through env(1), which then execs it (same pid).
        var psi = CliProcess.StartInfo(["run", f.Busybox, "--", "sh", "-c", "trap 'exit 143' TERM; echo started; sleep 120 & wait"], f.Env());
        psi.ArgumentList.Insert(0, psi.FileName);
        psi.ArgumentList.Insert(0, "--default-signal=INT");
        psi.FileName = "env";
        using var p = Process.Start(psi)!;
        var stdout = new OutputCollector();
        var stderr = new OutputCollector();
        stdout.Attach(p, stdout: true);
        stderr.Attach(p, stdout: false);
        try
        {
            await Poll.UntilAsync(() => stdout.Text.Contains("started"), TimeSpan.FromSeconds(30), "the job's first line");
            CliProcess.Signal(p, CliProcess.SIGINT);
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            try { await p.WaitForExitAsync(cts.Token); }
            catch (OperationCanceledException)
            {
                Assert.Fail($"the CLI did not exit within 30 s of SIGINT\n--- stdout\n{stdout.Text}\n--- stderr\n{stderr.Text}");
            }
        }
        finally
        {
            if (!p.HasExited) p.Kill(entireProcessTree: true);
        }
        Assert.True(p.ExitCode == 130, $"exit {p.ExitCode}\n{stderr.Text}");
        var id = Regex.Match(stderr.Text, @"job (\S+) submitted").Groups[1].Value;
        Assert.Equal("cancelled", (await f.GetJobAsync(id)).GetProperty("state").GetString());
        Assert.Contains($"job {id} cancelled", stderr.Text);
    }

    [Fact]
    public async Task Run_ShowsColouredProgress_OnATerminal_AndNoColourWithNoColor()
    {
        string[] args = ["run", f.Busybox, "--", "echo", "on-a-terminal"];
        var tty = await CliProcess.RunInTerminalAsync(args, f.Env(("TERM", "xterm-256color")));
        Assert.True(tty.ExitCode == 0, tty.ToString());
        Assert.Contains("on-a-terminal", tty.Stdout);
        Assert.Matches(ColourSequence(), tty.Stdout); // coloured state lines

        var plain = await CliProcess.RunInTerminalAsync(args, f.Env(("TERM", "xterm-256color"), ("NO_COLOR", "1")));
        Assert.True(plain.ExitCode == 0, plain.ToString());
        Assert.Contains("succeeded", plain.Stdout);
        Assert.DoesNotMatch(ColourSequence(), plain.Stdout);
    }

    /// <summary>An SGR sequence that sets a foreground or background colour (30-37, 38;..., 40-47, 90-97).</summary>
    [GeneratedRegex(@"\u001b\[(?:[0-9;]*;)?(?:3[0-8]|4[0-8]|9[0-7])(?:;[0-9;]*)?m")]
    private static partial Regex ColourSequence();
}
