using BatchRunner.Server.Tests.Observability;
using BatchRunner.Testing;

namespace BatchRunner.Server.Tests;

/// <summary>
/// The scripts of gpu-check/ run for real only on a GPU machine, lent rarely and for minutes: a syntax error found
/// there costs a device run. (The whole recipe is rehearsed by gpu-check/test-local.sh, which needs minutes and
/// the shared lock, so it is not part of this suite; see gpu-check/README.md.)
/// </summary>
public sealed class GpuCheckScriptsFacts
{
    private static string GpuCheck => Path.Combine(RepoPaths.Root, "gpu-check");

    public static TheoryData<string> ShellScripts() => new(Directory.GetFiles(GpuCheck, "*.sh").Select(Path.GetFileName).Order()!);

    public static TheoryData<string> PythonFiles() => new(
        Directory.GetFiles(GpuCheck, "*.py", SearchOption.AllDirectories).Select(f => Path.GetRelativePath(GpuCheck, f)).Order());

    [Theory]
    [MemberData(nameof(ShellScripts))]
    public async Task ShellScript_Parses_AndIsExecutable(string script)
    {
        var path = Path.Combine(GpuCheck, script);
        await ExternalCommand.RunAsync("bash", ["-n", path]);
        Assert.True((File.GetUnixFileMode(path) & UnixFileMode.UserExecute) != 0, $"{script} is not executable");
    }

    [Theory]
    [MemberData(nameof(PythonFiles))]
    public async Task PythonFile_Parses(string file) =>
        await ExternalCommand.RunAsync("python3", ["-B", "-c", "import ast, sys; ast.parse(open(sys.argv[1]).read(), sys.argv[1])", Path.Combine(GpuCheck, file)]);

    [Fact]
    public async Task ServerCheck_JobScriptParses_AndDotNetTimesCompare()
    {
        // The job script is a string run inside the containers; the times are .NET's (7 fractional digits, Z).
        var output = await ExternalCommand.RunAsync("python3", ["-B", "-c", """
            import ast, sys
            sys.path.insert(0, sys.argv[1])
            import server_check as c
            ast.parse(c.JOB_SCRIPT)
            a = c.parse_time("2026-11-29T19:55:48.9824701Z")
            b = c.parse_time("2026-11-29T20:55:49.036+01:00")
            print(a < b, (b - a).total_seconds())
            """, GpuCheck]);
        Assert.Equal("True 0.05353", output.Trim());
    }
}
