using BatchRunner.Server.Storage;
using BatchRunner.Server.Hosting;
using BatchRunner.Testing;

namespace BatchRunner.Server.Tests;

/// <summary>The data directory's modes: the narrowest that lets the embedded PostgreSQL and a user namespace through.</summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class DataDirectoryAccessFacts : IDisposable
{
    private readonly string _root;

    public DataDirectoryAccessFacts()
    {
        var parent = Directory.CreateTempSubdirectory("br-dataaccess-").FullName;
        // Searchable by anyone (as /var/lib is): what stops others must be the data directory's own modes.
        File.SetUnixFileMode(parent, (UnixFileMode)0b111_001_001);
        _root = Path.Combine(parent, "data");
    }

    public void Dispose() => Directory.Delete(Path.GetDirectoryName(_root)!, recursive: true);

    [Theory]
    [InlineData(null, null, null, "700")]
    [InlineData(104u, null, 104u, "710")]
    [InlineData(null, 200000u, 200000u, "710")]
    [InlineData(200000u, 200000u, 200000u, "710")]
    [InlineData(104u, 200000u, null, "711")]
    public void For_GivesTheNarrowestMode_WhenSomeoneElseMustSearchIt(uint? postgresGid, uint? namespaceGid, uint? group, string mode)
    {
        var access = DataDirectoryAccess.For(postgresGid, namespaceGid);

        Assert.Equal(group, access.Group);
        Assert.Equal(mode, Convert.ToString((int)access.Mode, 8));
    }

    [Fact]
    public async Task Apply_ClosesEveryEntryToOthers_WhenAnOlderVersionLeftThemOpen()
    {
        Directory.CreateDirectory(Path.Combine(_root, "jobs", "abc"));
        File.SetUnixFileMode(Path.Combine(_root, "jobs"), (UnixFileMode)0b111_101_101);
        File.WriteAllText(Path.Combine(_root, "postgres.log"), "log");
        File.SetUnixFileMode(Path.Combine(_root, "postgres.log"), (UnixFileMode)0b110_100_100);
        var paths = new DataPaths(_root);

        DataDirectoryAccess.For(104, null).Apply(paths, userNamespaceGid: null);

        Assert.Equal("710 0:104", await ModeAsync(_root));
        foreach (var dir in new[] { paths.Images, paths.JobsRoot, paths.RunRoot, paths.State, paths.InputsStaging, paths.InputsStore })
            Assert.Equal("700 0:0", await ModeAsync(dir));
        Assert.Equal("600 0:0", await ModeAsync(Path.Combine(_root, "postgres.log")));
    }

    [Fact]
    public async Task Apply_LetsTheNamespaceGroupSearchRunAndJobsOnly_WhenJobsRunInAUserNamespace()
    {
        var paths = new DataPaths(_root);

        DataDirectoryAccess.For(104, 200000).Apply(paths, userNamespaceGid: 200000);

        Assert.Equal("711 0:0", await ModeAsync(_root));
        Assert.Equal("710 0:200000", await ModeAsync(paths.RunRoot));
        Assert.Equal("710 0:200000", await ModeAsync(paths.JobsRoot));
        Assert.Equal("700 0:0", await ModeAsync(paths.Images));
        File.WriteAllText(Path.Combine(paths.JobsRoot, "x"), "x");
        File.SetUnixFileMode(Path.Combine(paths.JobsRoot, "x"), (UnixFileMode)0b110_100_100);
        // Search only: nobody lists nothing and reads nothing below, not even a world-readable file.
        Assert.Empty(await HostUserProbe.ReadableByNobodyAsync([_root, paths.RunRoot, paths.JobsRoot, paths.Images, Path.Combine(paths.JobsRoot, "x")]));
    }

    private static async Task<string> ModeAsync(string path) => (await ExternalCommand.RunAsync("stat", ["-c", "%a %u:%g", path])).Trim();
}
