using System.Diagnostics;
using System.Reflection;
using System.Text.Json;
using System.Text.RegularExpressions;
using BatchRunner.Server.Tests.Observability;

namespace BatchRunner.Server.Tests.OpenApi;

/// <summary>
/// What a client author does with <c>/openapi/v1.json</c>: generate a C# client with Kiota (the local dotnet tool
/// of .config/dotnet-tools.json), compile it with a small program (ClientProbe/) and run that against the real server.
/// The program submits a job, waits for it, reads its logs, submits one with an input file as the multipart form, and
/// is refused without the key, all through the generated types; it prints what it saw as JSON, asserted here.
/// </summary>
[Collection(ServerCollection.Name)]
public sealed partial class GeneratedClientFacts(ServerFixture f) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("br-openapi-client-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task KiotaClient_SubmitsWaitsAndReadsLogs_AndIsRefusedWithoutTheKey()
    {
        var document = Path.Combine(_dir, "openapi-v1.json");
        await File.WriteAllTextAsync(document, await f.Anonymous.GetStringAsync("/openapi/v1.json"));

        // As the README says: restore the tool, generate, build.
        await RunAsync(RepoPaths.Root, "tool", "restore");
        var kiota = await RunAsync(RepoPaths.Root, "kiota", "generate", "--language", "CSharp", "--openapi", document,
            "--output", Path.Combine(_dir, "Generated"), "--namespace-name", "BatchRunner.Generated", "--class-name", "BatchRunnerApiClient",
            "--exclude-backward-compatible", "--clean-output", "--log-level", "Warning");
        // Kiota picks one request body per operation (JSON here); the multipart form of POST /api/v1/jobs gets a client of its own.
        var multipart = await RunAsync(RepoPaths.Root, "kiota", "generate", "--language", "CSharp", "--openapi", document,
            "--output", Path.Combine(_dir, "GeneratedMultipart"), "--namespace-name", "BatchRunner.Generated.Multipart", "--class-name", "BatchRunnerMultipartClient",
            "--exclude-backward-compatible", "--clean-output", "--log-level", "Warning", "--structured-mime-types", "multipart/form-data", "--include-path", "/api/v1/jobs#POST");
        // The document reads without complaint (Kiota's validation rules included): no warning but the update check's
        // (no route to GitHub here).
        var warnings = Warnings().Matches(kiota.Stdout + kiota.Stderr + multipart.Stdout + multipart.Stderr)
            .Select(m => m.Groups[1].Value.Trim()).Where(w => w != "Unable to check for updates");
        Assert.Empty(warnings);

        foreach (var file in Directory.EnumerateFiles(Path.Combine(AppContext.BaseDirectory, "OpenApi", "ClientProbe")))
            File.Copy(file, Path.Combine(_dir, Path.GetFileName(file)));
        var kiotaVersion = typeof(GeneratedClientFacts).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().Single(a => a.Key == "KiotaVersion").Value;
        await RunAsync(_dir, "build", "ClientProbe.csproj", "-c", "Release", "-nologo", "-v", "quiet", $"-p:KiotaVersion={kiotaVersion}",
            // Outside the repository: none of its props; no build servers left running after the test.
            "-p:ImportDirectoryBuildProps=false", "-p:ImportDirectoryPackagesProps=false", "-p:UseSharedCompilation=false", "-nodeReuse:false");

        var address = f.Anonymous.BaseAddress!.ToString().TrimEnd('/');
        var output = await RunAsync(_dir, Path.Combine(_dir, "bin", "Release", "net10.0", "ClientProbe.dll"), address, ServerFixture.ApiKey, f.Busybox);
        var seen = JsonDocument.Parse(output.Stdout.Trim().Split('\n')[^1]).RootElement;

        Assert.Equal("succeeded", seen.GetProperty("state").GetString());
        Assert.Equal(0, seen.GetProperty("exitCode").GetInt32());
        Assert.Contains("hello from a generated client", seen.GetProperty("logs").GetString());
        Assert.Equal("queued", seen.GetProperty("submittedState").GetString());
        Assert.Equal(64L << 20, seen.GetProperty("memoryBytes").GetInt64());
        Assert.Equal(401, seen.GetProperty("withoutKeyStatus").GetInt32());
        Assert.Equal("Unauthorized", seen.GetProperty("withoutKeyTitle").GetString());
        Assert.Equal(404, seen.GetProperty("unknownJobStatus").GetInt32());
        Assert.Equal(400, seen.GetProperty("invalidStatus").GetInt32());
        Assert.Contains("image", seen.GetProperty("invalidFields").EnumerateArray().Select(e => e.GetString()));
        Assert.True(seen.GetProperty("basicAuthListed").GetBoolean());
        Assert.True(seen.GetProperty("healthOk").GetBoolean());
        Assert.Equal("succeeded", seen.GetProperty("multipartState").GetString());
        Assert.Contains("hello from an input file", seen.GetProperty("multipartLogs").GetString());
        Assert.Contains(seen.GetProperty("jobId").GetString()!, await f.Client.GetStringAsync("/api/v1/jobs?limit=1000"));
    }

    /// <summary>Runs <c>dotnet ARGS</c> in <paramref name="dir"/>; asserts exit 0 and returns what it wrote.</summary>
    private static async Task<(string Stdout, string Stderr)> RunAsync(string dir, params string[] args)
    {
        var psi = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
        {
            WorkingDirectory = dir,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        psi.Environment["DOTNET_NOLOGO"] = "1";
        psi.Environment["DOTNET_CLI_DO_NOT_USE_MSBUILD_SERVER"] = "1";
        // Kiota asks GitHub for a newer version (its setting Update:Disabled) and sends telemetry unless told not to.
        psi.Environment["KIOTA_UPDATE__DISABLED"] = "true";
        psi.Environment["KIOTA_CLI_TELEMETRY_OPTOUT"] = "true";
        psi.Environment.Remove("MSBuildExtensionsPath");
        psi.Environment.Remove("MSBuildSDKsPath");
        psi.Environment.Remove("MSBUILD_EXE_PATH");
        using var process = Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var deadline = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        try
        {
            await process.WaitForExitAsync(deadline.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"dotnet {string.Join(' ', args)} took over 3 minutes");
        }
        var (o, e) = (await stdout, await stderr);
        Assert.True(process.ExitCode == 0, $"dotnet {string.Join(' ', args)} exited {process.ExitCode}:\n{o}\n{e}");
        return (o, e);
    }

    /// <summary>A Kiota log entry at warning level: "warn: CATEGORY[ID]" and its message on the next line.</summary>
    [GeneratedRegex(@"^warn: [^\n]*\n([^\n]*)", RegexOptions.Multiline)]
    private static partial Regex Warnings();
}
