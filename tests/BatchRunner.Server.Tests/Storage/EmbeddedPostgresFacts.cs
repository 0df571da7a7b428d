using BatchRunner.Server.Storage;
using BatchRunner.Testing;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;

namespace BatchRunner.Server.Tests.Storage;

/// <summary>
/// The embedded PostgreSQL run from binaries outside /usr/lib/postgresql and as a user other than postgres: what
/// a host without a PostgreSQL package or a postgres user (the GPU machine, gpu-check/server-check.sh) needs.
/// </summary>
public sealed class EmbeddedPostgresFacts : IDisposable
{
    private readonly string _dir = Path.Combine("/tmp", "br-pg-tests-" + Guid.NewGuid().ToString("N")[..8]);

    public EmbeddedPostgresFacts()
    {
        Directory.CreateDirectory(_dir);
        // The cluster's user must be able to enter the data directory's parents.
        File.SetUnixFileMode(_dir, (UnixFileMode)0x1ED); // 0755
    }

    [Fact]
    public void FindServerBinaries_ReturnsTheConfiguredDir_WhenItHoldsInitdbAndPgCtl()
    {
        var bin = Directory.CreateDirectory(Path.Combine(_dir, "bin")).FullName;
        File.WriteAllText(Path.Combine(bin, "initdb"), "");
        File.WriteAllText(Path.Combine(bin, "pg_ctl"), "");

        Assert.Equal(bin, EmbeddedPostgres.FindServerBinaries(bin + "/"));
    }

    [Fact]
    public void FindServerBinaries_FailsNamingTheVariable_WhenTheConfiguredDirIsNoServer()
    {
        var e = Assert.Throws<InvalidOperationException>(() => EmbeddedPostgres.FindServerBinaries(_dir));

        Assert.Contains(EmbeddedPostgres.BinDirVariable, e.Message);
        Assert.Contains("no initdb and pg_ctl", e.Message);
    }

    [Fact]
    public async Task StartAsync_FailsSayingWhatToDo_WhenTheRunAsUserDoesNotExist()
    {
        var e = await Assert.ThrowsAsync<InvalidOperationException>(() =>
            EmbeddedPostgres.StartAsync(Path.Combine(_dir, "data"), null, "br-no-such-user", NullLogger.Instance, CancellationToken.None));

        Assert.Contains("no such user", e.Message);
        Assert.Contains(EmbeddedPostgres.UserVariable, e.Message);
        Assert.False(Directory.Exists(Path.Combine(_dir, "data", "postgres")), "nothing is initialised for a user that does not exist");
    }

    [Fact]
    public async Task StartAsync_RunsRelocatedBinaries_AsTheConfiguredUser_WhoseGroupHasAnotherName()
    {
        // Debian's server copied elsewhere with its usr/lib ↔ usr/share layout, as gpu-check carries it; "nobody"
        // exists on every Debian and Ubuntu host and its group is "nogroup".
        var system = EmbeddedPostgres.FindServerBinaries() ?? throw new InvalidOperationException("no PostgreSQL here: run scripts/install-deps.sh");
        var version = Path.GetFileName(Path.GetDirectoryName(system))!;
        var root = Path.Combine(_dir, "carried");
        var bin = Path.Combine(root, "usr/lib/postgresql", version, "bin");
        var lib = Path.Combine(root, "usr/lib/postgresql", version, "lib");
        Directory.CreateDirectory(bin);
        Directory.CreateDirectory(lib);
        foreach (var tool in new[] { "postgres", "initdb", "pg_ctl" }) File.Copy(Path.Combine(system, tool), Path.Combine(bin, tool));
        foreach (var module in Directory.GetFiles(Path.Combine(Path.GetDirectoryName(system)!, "lib"), "*.so").Where(m => !m.EndsWith("/llvmjit.so")))
            File.Copy(module, Path.Combine(lib, Path.GetFileName(module)));
        Directory.CreateDirectory(Path.Combine(root, "usr/share/postgresql"));
        await ExternalCommand.RunAsync("cp", ["-a", Path.Combine("/usr/share/postgresql", version), Path.Combine(root, "usr/share/postgresql")]);
        await ExternalCommand.RunAsync("chmod", ["-R", "a+rX", root]);

        await using var pg = await EmbeddedPostgres.StartAsync(Path.Combine(_dir, "data"), bin, "nobody", NullLogger.Instance, CancellationToken.None);

        await using (var conn = new NpgsqlConnection(pg.ConnectionString))
        {
            await conn.OpenAsync();
            await using var cmd = new NpgsqlCommand("select current_database()", conn);
            Assert.Equal(EmbeddedPostgres.DatabaseName, await cmd.ExecuteScalarAsync());
        }
        var postmasterPid = File.ReadLines(Path.Combine(_dir, "data", "postgres", "postmaster.pid")).First();
        Assert.Equal(Path.Combine(bin, "postgres"), new FileInfo($"/proc/{postmasterPid}/exe").LinkTarget);
        var owner = (await ExternalCommand.RunAsync("stat", ["-c", "%U:%G", Path.Combine(_dir, "data", "postgres")])).Trim();
        Assert.Equal("nobody:nogroup", owner);
        await pg.StopAsync();
    }

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
