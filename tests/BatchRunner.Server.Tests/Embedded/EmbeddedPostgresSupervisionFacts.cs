using BatchRunner.Runtime;
using BatchRunner.Server.Storage;
using BatchRunner.Server.Storage.Embedded;
using BatchRunner.Testing;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;

namespace BatchRunner.Server.Tests.Embedded;

/// <summary>
/// The embedded cluster's start, adoption and stop, in this process on real PostgreSQL: lock files left by
/// a dead server, a postmaster left running by an earlier BatchRunner, and what a stop leaves behind.
/// </summary>
public sealed class EmbeddedPostgresSupervisionFacts : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("br-pg-").FullName;

    public EmbeddedPostgresSupervisionFacts() => File.SetUnixFileMode(_root, (UnixFileMode)0b111_101_101); // the postgres user enters it

    public void Dispose()
    {
        var data = Path.Combine(_root, "postgres");
        foreach (var pid in PostgresProcesses.In(data)) HostProcesses.Signal(pid, HostProcesses.SIGKILL);
        Directory.Delete(_root, recursive: true);
    }

    private Task<EmbeddedPostgres> StartAsync() => EmbeddedPostgres.StartAsync(_root, NullLogger.Instance, CancellationToken.None);

    private static async Task<int> SelectOneAsync(EmbeddedPostgres pg)
    {
        await using var conn = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(pg.ConnectionString) { Pooling = false }.ConnectionString);
        await conn.OpenAsync();
        await using var cmd = new NpgsqlCommand("select 1", conn);
        return (int)(await cmd.ExecuteScalarAsync())!;
    }

    [Fact]
    public async Task StartAsync_ReplacesLockFilesWhosePidIsAnotherProcess_AndRunsThePostmasterAsItsOwnChild()
    {
        var first = await StartAsync(); // initdb
        await first.StopAsync();
        Assert.Empty(PostgresProcesses.In(first.DataDirectory));

        // A crashed server's lock files, whose pid now belongs to an unrelated live process (PostgreSQL alone would refuse to start).
        using var unrelated = System.Diagnostics.Process.Start("sleep", "60");
        // A descriptor this process holds without close-on-exec, as the one a shell's flock passes down.
        var inheritedPath = Path.Combine(_root, "inherited-lock");
        var inherited = OpenWithoutCloseOnExec(inheritedPath);
        await File.WriteAllTextAsync(Path.Combine(first.DataDirectory, "postmaster.pid"), $"{unrelated.Id}\n{first.DataDirectory}\n");
        await File.WriteAllTextAsync(Path.Combine(first.SocketDirectory, ".s.PGSQL.5432.lock"), $"{unrelated.Id}\n{first.SocketDirectory}\n");
        try
        {
            var pg = await StartAsync();
            Assert.Equal(1, await SelectOneAsync(pg));
            var status = pg.Status;
            Assert.Equal(EmbeddedPostgresState.Running, status.State);
            Assert.False(status.Adopted);
            var pid = status.Pid!.Value;
            Assert.Equal(pid, PostmasterPidFile.ReadPid(Path.Combine(pg.DataDirectory, "postmaster.pid")));
            // Our direct child (no daemonising pg_ctl in between), leader of its own session.
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            Assert.Equal(Environment.ProcessId.ToString(), fields[1]);
            Assert.Equal(pid.ToString(), fields[3]);
            Assert.True(OwnedChildren.IsClaimed(pid), "the orphan reaper may never reap it");
            Assert.DoesNotContain(inheritedPath, Directory.EnumerateFileSystemEntries($"/proc/{pid}/fd").Select(fd => new FileInfo(fd).LinkTarget));
            Assert.True(Directory.Exists(pg.LogDirectory) && Directory.EnumerateFiles(pg.LogDirectory, "postgresql-*.log").Any(), "its log is in DATA/postgres/log");

            await pg.StopAsync();
            Assert.Equal(EmbeddedPostgresState.Stopped, pg.Status.State);
            Assert.Empty(PostgresProcesses.In(pg.DataDirectory));
            Assert.False(OwnedChildren.IsClaimed(pid));
        }
        finally
        {
            unrelated.Kill();
            close(inherited);
        }
    }

    private static int OpenWithoutCloseOnExec(string path)
    {
        const int O_RDWR = 2, O_CREAT = 0x40;
        var fd = open(path, O_RDWR | O_CREAT, 0x180);
        Assert.True(fd > 2, $"open {path}");
        return fd;
    }

    // .NET opens every file close-on-exec; this test needs one that is not, as a shell's flock passes down.
    [System.Runtime.InteropServices.DllImport("libc", SetLastError = true)]
    private static extern int open(string path, int flags, int mode);

    [System.Runtime.InteropServices.DllImport("libc")]
    private static extern int close(int fd);
}
