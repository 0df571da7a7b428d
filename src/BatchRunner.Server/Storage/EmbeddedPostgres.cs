using System.Diagnostics;
using BatchRunner.Server.Storage.Embedded;
using Microsoft.Extensions.Logging;
using Npgsql;

namespace BatchRunner.Server.Storage;

/// <summary>
/// The PostgreSQL cluster BatchRunner runs itself when no connection string is configured: initialised
/// on first start in DATA/postgres, listening only on a Unix socket in DATA/postgres-run (no TCP port),
/// run as the <c>postgres</c> user or <see cref="UserVariable"/>'s (the server refuses root), supervised while
/// BatchRunner runs (restarted when it dies: <see cref="PostgresSupervisor"/>), stopped on shutdown.
/// </summary>
/// <remarks>
/// The postmaster is BatchRunner's own child in a session of its own, so it outlives a crashed BatchRunner;
/// the next start finds it running in the data directory and adopts it. Its log goes to DATA/postgres/log
/// (one file per weekday, each overwritten a week later). Its oom_score_adj is <see cref="OomScoreAdj"/>,
/// inherited by its backends, so the kernel's OOM killer takes job containers (positive) first.
/// </remarks>
public sealed partial class EmbeddedPostgres : IAsyncDisposable, IDatabaseAvailability
{
    public const string DatabaseName = "batchrunner";
    private const int Port = 5432; // only names the socket file; nothing listens on TCP

    private readonly string _bin;
    private readonly string _dataDir;
    private readonly string _socketDir;
    private readonly RunAsUser? _runAsUser;
    private string? RunAsName => _runAsUser?.Name;
    private ILogger _log;
    private PostgresSupervisor? _supervisor;

    /// <summary>The postmaster's (and its backends') oom_score_adj: below BatchRunner's own, far below jobs'.</summary>
    public const int OomScoreAdj = -900;

    private EmbeddedPostgres(string bin, string root, RunAsUser? runAs, ILogger log)
    {
        _bin = bin;
        _dataDir = Path.Combine(root, "postgres");
        _socketDir = Path.Combine(root, "postgres-run");
        _runAsUser = runAs;
        _log = log;
    }

    public string ConnectionString => new NpgsqlConnectionStringBuilder
    {
        Host = _socketDir,
        Port = Port,
        Username = "postgres",
        Database = DatabaseName,
        // Hangfire's workers, its long-polling listener and the API share the pool.
        MaxPoolSize = 100,
    }.ConnectionString;

    /// <summary>Environment variable: the bin directory of the PostgreSQL server to run (initdb, pg_ctl, postgres),
    /// e.g. binaries carried to a host without a PostgreSQL package. Unset: the newest /usr/lib/postgresql/*/bin.</summary>
    public const string BinDirVariable = "BATCHRUNNER_POSTGRES_BIN";

    /// <summary>Environment variable: the unprivileged user the cluster runs as when BatchRunner runs as root
    /// (PostgreSQL refuses root). Unset: <c>postgres</c>.</summary>
    public const string UserVariable = "BATCHRUNNER_POSTGRES_USER";

    /// <summary>Initialises (first run), starts or adopts the cluster and makes sure the database exists.</summary>
    public static Task<EmbeddedPostgres> StartAsync(string dataRoot, ILogger log, CancellationToken ct) =>
        StartAsync(dataRoot, Environment.GetEnvironmentVariable(BinDirVariable), Environment.GetEnvironmentVariable(UserVariable), log, ct);

    /// <param name="binDir">The server's bin directory; null or empty: <see cref="FindServerBinaries(string?)"/> looks in /usr/lib/postgresql.</param>
    /// <param name="user">Who runs the cluster when this process is root; null or empty: <c>postgres</c>.</param>
    public static async Task<EmbeddedPostgres> StartAsync(string dataRoot, string? binDir, string? user, ILogger log, CancellationToken ct)
    {
        var bin = FindServerBinaries(binDir) ?? throw new InvalidOperationException(
            "embedded PostgreSQL: no server binaries found in /usr/lib/postgresql/*/bin (install the 'postgresql' package, " +
            $"run scripts/install-deps.sh, set {BinDirVariable} to a server's bin directory, or set BATCHRUNNER_CONNECTION_STRING to use an existing database)");
        var runAs = await RunAsUserAsync(user, ct);
        var pg = new EmbeddedPostgres(bin, dataRoot, runAs, log);
        await pg.StartCoreAsync(ct);
        return pg;
    }

    /// <summary>
    /// <paramref name="configured"/> when given (it must hold initdb and pg_ctl: a wrong setting is an error, never a
    /// silent fall-back to another server), else the newest /usr/lib/postgresql/*/bin, else null.
    /// </summary>
    public static string? FindServerBinaries(string? configured = null)
    {
        if (!string.IsNullOrWhiteSpace(configured))
        {
            var dir = Path.TrimEndingDirectorySeparator(Path.GetFullPath(configured));
            return HasServerTools(dir) ? dir : throw new InvalidOperationException(
                $"embedded PostgreSQL: {BinDirVariable}={configured} has no initdb and pg_ctl (it must name a PostgreSQL server's bin directory)");
        }
        return Directory.Exists("/usr/lib/postgresql")
            ? Directory.GetDirectories("/usr/lib/postgresql")
                .Select(d => Path.Combine(d, "bin"))
                .Where(HasServerTools)
                .OrderByDescending(b => int.TryParse(Path.GetFileName(Path.GetDirectoryName(b)), out var v) ? v : 0)
                .FirstOrDefault()
            : null;
    }

    private static bool HasServerTools(string bin) => File.Exists(Path.Combine(bin, "initdb")) && File.Exists(Path.Combine(bin, "pg_ctl"));

    /// <summary>A host user the cluster runs as, with its uid and (login) gid.</summary>
    public sealed record RunAsUser(string Name, uint Uid, uint Gid);

    /// <summary>The user the cluster runs as (<see cref="UserVariable"/>, default postgres) when this process is root;
    /// null when it is not (the cluster then runs as this process's user).</summary>
    public static Task<RunAsUser?> RunAsUserAsync(CancellationToken ct) => RunAsUserAsync(Environment.GetEnvironmentVariable(UserVariable), ct);

    /// <summary>The configured user (default postgres), checked to exist so that a host without it gets a message that says what to do.</summary>
    private static async Task<RunAsUser?> RunAsUserAsync(string? configured, CancellationToken ct)
    {
        if (Environment.UserName != "root") return null;
        var user = string.IsNullOrWhiteSpace(configured) ? "postgres" : configured.Trim();
        if (user is "root" or "0")
            throw new InvalidOperationException($"embedded PostgreSQL: {UserVariable}={user}: PostgreSQL refuses to run as root; name an unprivileged user");
        if ((await RunAsync("id", ["-u", user], ct, allowFailure: true)).ExitCode != 0)
            throw new InvalidOperationException(
                $"embedded PostgreSQL runs as the user \"{user}\" (PostgreSQL refuses root), but this host has no such user: " +
                $"create it (useradd --system {user}) or set {UserVariable} to an existing unprivileged user");
        var gid = (await RunAsync("id", ["-g", user], ct)).Output.Trim();
        var uid = (await RunAsync("id", ["-u", user], ct)).Output.Trim();
        return new RunAsUser(user, uint.Parse(uid, System.Globalization.CultureInfo.InvariantCulture), uint.Parse(gid, System.Globalization.CultureInfo.InvariantCulture));
    }

    /// <summary>The cluster's data directory (DATA/postgres).</summary>
    public string DataDirectory => _dataDir;

    /// <summary>The Unix socket directory (DATA/postgres-run): pg_dump and psql connect here as postgres.</summary>
    public string SocketDirectory => _socketDir;

    /// <summary>Where the cluster logs (DATA/postgres/log).</summary>
    public string LogDirectory => Path.Combine(_dataDir, "log");

    public EmbeddedPostgresStatus Status => _supervisor?.Status
        ?? new EmbeddedPostgresStatus(EmbeddedPostgresState.Stopped, null, false, 0, null, null, LogDirectory);

    public bool IsRestarting => _supervisor?.IsRestarting ?? false;

    public long BackSinceTicks => _supervisor?.BackSinceTicks ?? 0;

    /// <summary>Fires each time the cluster accepts connections again after a restart: connection pools
    /// still hold connections to the dead server and must be cleared.</summary>
    public event Action? Restarted;

    /// <summary>Where it logs (the host's logger once <see cref="UseLogger"/> was called).</summary>
    public ILogger Logger => _log;

    /// <summary>Logs through <paramref name="log"/> from now on (the host's logger, once the host is built).</summary>
    public void UseLogger(ILogger log)
    {
        _log = log;
        if (_supervisor is not null) _supervisor.Log = log;
    }

    private async Task StartCoreAsync(CancellationToken ct)
    {
        Directory.CreateDirectory(_dataDir);
        Directory.CreateDirectory(_socketDir);
        if (RunAsName is not null)
        {
            EnsureReachable(_dataDir, _runAsUser!);
            // "user:" gives the user's login group, whatever its name (nobody's is nogroup on Debian and Ubuntu).
            await RunAsync("chown", ["-R", $"{RunAsName}:", _dataDir, _socketDir], ct);
            File.SetUnixFileMode(_dataDir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            // Only the postgres user (and root) may reach the socket: auth is "trust" on it.
            File.SetUnixFileMode(_socketDir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }

        if (!File.Exists(Path.Combine(_dataDir, "PG_VERSION")))
        {
            LogInitialising(_log, _dataDir);
            await RunPgAsync("initdb", ["-D", _dataDir, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-locale", "--no-sync"], ct);
        }

        var probe = new NpgsqlConnectionStringBuilder(ConnectionString) { Database = "postgres" }.ConnectionString;
        var supervisor = new PostgresSupervisor(_dataDir, Path.Combine(_socketDir, $".s.PGSQL.{Port}.lock"), probe, PostmasterCommand, _log);
        supervisor.Restarted += () => Restarted?.Invoke();
        _supervisor = supervisor;
        await supervisor.StartAsync(ct);
        await EnsureDatabaseAsync(ct);
    }

    /// <summary>
    /// The postmaster's command line. <c>setsid</c> gives it a session of its own; <c>choom</c> lowers its
    /// oom_score_adj while still privileged (when this process may: CAP_SYS_RESOURCE); <c>setpriv</c> drops
    /// to the postgres user. Each execs the next, so the postmaster keeps the pid we started (it is our
    /// direct child: its exit is seen at once).
    /// </summary>
    private ProcessStartInfo PostmasterCommand()
    {
        var psi = new ProcessStartInfo("setsid");
        var args = psi.ArgumentList;
        if (BatchRunner.Runtime.OomScore.CanLower())
            foreach (var a in new[] { "choom", "-n", OomScoreAdj.ToString(System.Globalization.CultureInfo.InvariantCulture), "--" }) args.Add(a);
        // setpriv takes the group by number: the user's login group, whatever its name.
        if (_runAsUser is { } user)
            foreach (var a in new[] { "setpriv", $"--reuid={user.Name}", $"--regid={user.Gid}", "--init-groups", "--" }) args.Add(a);
        args.Add(Path.Combine(_bin, "postgres"));
        foreach (var a in PostmasterArguments(_dataDir, _socketDir)) args.Add(a);
        return psi;
    }

    private static IEnumerable<string> PostmasterArguments(string dataDir, string socketDir) =>
    [
        "-D", dataDir, "-k", socketDir, "-p", Port.ToString(System.Globalization.CultureInfo.InvariantCulture),
        "-c", "listen_addresses=", "-c", "max_connections=200", "-c", "fsync=on",
        // Its own log in DATA/postgres/log: one file per weekday, overwritten when the week comes round,
        // so the log is bounded by seven days of PostgreSQL's (warnings-and-above) output.
        "-c", "logging_collector=on", "-c", "log_directory=log", "-c", "log_filename=postgresql-%a.log",
        "-c", "log_rotation_age=1d", "-c", "log_rotation_size=0", "-c", "log_truncate_on_rotation=on",
    ];

    private async Task EnsureDatabaseAsync(CancellationToken ct)
    {
        var admin = new NpgsqlConnectionStringBuilder(ConnectionString) { Database = "postgres", Pooling = false }.ConnectionString;
        await using var conn = new NpgsqlConnection(admin);
        await conn.OpenAsync(ct);
        await using var check = new NpgsqlCommand("select 1 from pg_database where datname = @n", conn);
        check.Parameters.AddWithValue("n", DatabaseName);
        if (await check.ExecuteScalarAsync(ct) is null)
        {
            await using var create = new NpgsqlCommand($"create database \"{DatabaseName}\"", conn);
            try { await create.ExecuteNonQueryAsync(ct); }
            catch (PostgresException e) when (e.SqlState == PostgresErrorCodes.DuplicateDatabase) { }
        }
    }

    /// <summary>Starts a stopped cluster again (after <see cref="StopAsync"/>): used to test database outages.</summary>
    public Task RestartAsync(CancellationToken ct = default) => StartCoreAsync(ct);

    /// <summary>Stops supervising and shuts the cluster down.</summary>
    public Task StopAsync() => _supervisor?.StopAsync() ?? Task.CompletedTask;

    public ValueTask DisposeAsync() => new(StopAsync());

    /// <summary>The cluster's user must be able to search every directory above its data directory (by owner, group
    /// or other bits: BatchRunner's data directory gives it group search, see DataDirectoryAccess).</summary>
    private static void EnsureReachable(string dataDir, RunAsUser user)
    {
        if (BatchRunner.Runtime.HostFiles.FirstUnsearchableAncestor(dataDir, user.Uid, user.Gid) is { } blocked)
            throw new InvalidOperationException(
                $"embedded PostgreSQL: its user {user.Name} cannot enter {blocked.Dir} (mode {Convert.ToString(blocked.Mode, 8)}, owner {blocked.Uid}:{blocked.Gid}); " +
                $"choose a data directory outside it (BATCHRUNNER_DATA_DIR) or run chmod o+x {blocked.Dir}");
    }

    private Task<(int ExitCode, string Output)> RunPgAsync(string tool, IReadOnlyList<string> args, CancellationToken ct, bool allowFailure = false)
    {
        var exe = Path.Combine(_bin, tool);
        return RunAsName is null
            ? RunAsync(exe, args, ct, allowFailure)
            : RunAsync("runuser", ["-u", RunAsName, "--", exe, .. args], ct, allowFailure);
    }

    private static async Task<(int ExitCode, string Output)> RunAsync(string exe, IReadOnlyList<string> args, CancellationToken ct, bool allowFailure = false)
    {
        var psi = new ProcessStartInfo(exe)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = false,
            UseShellExecute = false,
            // A cwd the postgres user can read, whatever ours is.
            WorkingDirectory = "/",
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"cannot start {exe}");
        var stdout = p.StandardOutput.ReadToEndAsync(ct);
        var stderr = p.StandardError.ReadToEndAsync(ct);
        await p.WaitForExitAsync(ct);
        var output = await stdout + await stderr;
        if (p.ExitCode != 0 && !allowFailure)
            throw new InvalidOperationException($"{Path.GetFileName(exe)} {string.Join(' ', args)} failed (exit {p.ExitCode}): {output.Trim()}");
        return (p.ExitCode, output);
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Initialising embedded PostgreSQL cluster in {DataDir}")]
    private static partial void LogInitialising(ILogger log, string dataDir);
}
