using BatchRunner.Server.Storage;
using BatchRunner.Testing;

namespace BatchRunner.Server.Tests.Cluster;

/// <summary>
/// A PostgreSQL server set up as Debian's packaged one is: owned by the postgres user, peer authentication
/// on the local socket, scram-sha-256 over TCP, listening on 127.0.0.1 (a free port). It stands in for
/// "the database machine" of README "Several machines"; it is not BatchRunner's embedded cluster.
/// </summary>
public sealed class SystemPostgres : IAsyncDisposable
{
    private readonly string _bin;

    private SystemPostgres(string root, string bin, int port)
    {
        Root = root;
        _bin = bin;
        Port = port;
    }

    public string Root { get; }
    public int Port { get; }
    public string DataDir => Path.Combine(Root, "data");
    public string SocketDir => Path.Combine(Root, "run");

    public static async Task<SystemPostgres> StartAsync(string root)
    {
        var bin = EmbeddedPostgres.FindServerBinaries() ?? throw new InvalidOperationException("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin");
        var pg = new SystemPostgres(root, bin, TestCluster.FreePort());
        Directory.CreateDirectory(pg.DataDir);
        Directory.CreateDirectory(pg.SocketDir);
        await ExternalCommand.RunAsync("chown", ["postgres:postgres", pg.DataDir, pg.SocketDir]);
        await pg.AsPostgresAsync("initdb", "-D", pg.DataDir, "-U", "postgres", "-E", "UTF8", "--no-locale", "--no-sync",
            "--auth-local=peer", "--auth-host=scram-sha-256");
        await pg.AsPostgresAsync("pg_ctl", "-D", pg.DataDir, "-l", Path.Combine(pg.SocketDir, "log"), "-w", "-t", "60",
            "-o", $"-k {pg.SocketDir} -p {pg.Port} -c listen_addresses=127.0.0.1 -c fsync=off", "start");
        return pg;
    }

    private Task<string> AsPostgresAsync(string tool, params string[] args) =>
        ExternalCommand.RunAsync("runuser", ["-u", "postgres", "--", Path.Combine(_bin, tool), .. args], workDir: "/");

    public async ValueTask DisposeAsync()
    {
        try { await AsPostgresAsync("pg_ctl", "-D", DataDir, "-m", "immediate", "-w", "stop"); }
        catch (InvalidOperationException) { }
    }
}
