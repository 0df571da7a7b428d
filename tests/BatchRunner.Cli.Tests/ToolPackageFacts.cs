using System.IO.Compression;
using System.Reflection;
using BatchRunner.Testing;

namespace BatchRunner.Cli.Tests;

/// <summary>The CLI packs as a .NET tool that <c>dotnet tool install</c> turns into a runnable <c>batchrunner</c>.</summary>
public sealed class ToolPackageFacts : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("br-cli-pack-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task Pack_MakesAToolPackage_ThatInstallsARunnableBatchrunner()
    {
        var configuration = typeof(ToolPackageFacts).Assembly.GetCustomAttribute<AssemblyConfigurationAttribute>()?.Configuration ?? "Release";
        var feed = Path.Combine(_dir, "feed");
        await ExternalCommand.RunAsync("dotnet", ["pack", Path.Combine(CliProcess.RepositoryRoot, "src", "BatchRunner.Cli"), "-c", configuration, "--no-build", "-o", feed,
            $"-p:PublishDir={Path.Combine(_dir, "publish")}/"], // packing a tool publishes it first: into the temp dir, not bin/
            timeout: TimeSpan.FromMinutes(3));
        var package = Assert.Single(Directory.GetFiles(feed, "BatchRunner.Cli.*.nupkg"));
        using (var zip = ZipFile.OpenRead(package))
        {
            var settings = zip.Entries.Single(e => e.FullName.EndsWith("DotnetToolSettings.xml", StringComparison.Ordinal));
            using var reader = new StreamReader(settings.Open());
            Assert.Contains("<Command Name=\"batchrunner\" EntryPoint=\"BatchRunner.Cli.dll\"", await reader.ReadToEndAsync());
        }

        var tools = Path.Combine(_dir, "tools");
        var version = Path.GetFileNameWithoutExtension(package)["BatchRunner.Cli.".Length..];
        await ExternalCommand.RunAsync("dotnet", ["tool", "install", "BatchRunner.Cli", "--tool-path", tools, "--add-source", feed, "--version", version],
            timeout: TimeSpan.FromMinutes(3));
        var help = await ExternalCommand.RunAsync(Path.Combine(tools, "batchrunner"), ["--help"]);
        Assert.Contains("batchrunner [command] [options]", help);
        Assert.Contains("run <image>", help);
    }
}
