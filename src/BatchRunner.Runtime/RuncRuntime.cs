using System.Diagnostics;
using System.Text.Json;
using System.Text.RegularExpressions;
using BatchRunner.Runtime.Cgroups;
using BatchRunner.Runtime.Logs;
using BatchRunner.Runtime.Spec;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using BatchRunner.Native;

namespace BatchRunner.Runtime;

public sealed partial record RuncRuntimeOptions
{
    /// <summary>Absolute path of the runtime binary (runc or crun).</summary>
    public required string BinaryPath { get; init; }
    public string Name { get; init; } = "runc";
    public string Version { get; init; } = "unknown";
    /// <summary>The runtime's --root: a state dir of our own, so `list` shows only BatchRunner's containers.</summary>
    public string StateRoot { get; init; } = "/run/batchrunner/runc";
    public string CgroupRoot { get; init; } = CgroupVersionDetector.DefaultRoot;
    /// <summary>Null: detected from /proc/self/mountinfo.</summary>
    public CgroupVersion? CgroupVersion { get; init; }
    /// <summary>How long `run --detach` may take to start the container.</summary>
    public TimeSpan StartTimeout { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>How long a kill may take before the container's processes are gone.</summary>
    public TimeSpan KillTimeout { get; init; } = TimeSpan.FromSeconds(10);
    /// <summary>Limit for helper commands (state, kill, delete, list).</summary>
    public TimeSpan CommandTimeout { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>Options applied after the defaults of <see cref="SpecBuilder.ForContainer"/> (seccomp, devices, ...).</summary>
    public IReadOnlyList<SpecOpt> ExtraSpecOptions { get; init; } = [];
    /// <summary>runc only: start containers from a sealed in-memory copy of the binary (<see cref="SealedBinary"/>), which
    /// spares each start runc's own re-execution; false: from the file (the bench's comparison).</summary>
    public bool RunFromSealedCopy { get; init; } = true;
    /// <summary>runc only: GOMAXPROCS for its `run` (its init sets 1 itself), unless this process's environment has one;
    /// null: the Go runtime's default, a scheduler slot per CPU.</summary>
    public int? GoMaxProcs { get; init; } = 1;
}

/// <summary>
/// Drives runc or crun (any runtime with the OCI CLI: run --detach, kill, delete, list) per
/// container with `run --detach` (create + start in one call). This process is a child subreaper, so
/// once `run --detach` exits the container's init is our child: its exit status comes from waitpid (128+N for
/// signal N), and its cgroup, which only `delete` removes, still holds the OOM-kill count and final
/// usage when it has exited. Neither needs `run --keep`, which crun before 1.9 lacks. The container's
/// stdout/stderr are FIFOs that a <see cref="LogRelay"/> of this process drains into the job's capped log files.
/// </summary>
public sealed partial class RuncRuntime : IContainerRuntime
{
    internal const string ConfigFile = "config.json";
    internal const string LogFile = "runc.log";
    internal const string PidFile = "init.pid";
    /// <summary>Where runc writes <see cref="PidFile"/> before renaming it into place: left behind by a `run` killed in between.</summary>
    internal const string PidFileBeingWritten = "." + PidFile;

    private readonly RuncRuntimeOptions _options;
    private readonly ILogger _logger;
    private readonly SealedBinary? _sealed;

    public RuncRuntime(RuncRuntimeOptions options, ILogger<RuncRuntime>? logger = null)
    {
        if (!Path.IsPathFullyQualified(options.BinaryPath)) throw new ArgumentException($"runtime binary \"{options.BinaryPath}\" must be an absolute path", nameof(options));
        _options = options;
        _logger = (ILogger?)logger ?? NullLogger.Instance;
        CgroupVersion = options.CgroupVersion ?? CgroupVersionDetector.Detect(options.CgroupRoot);
        Cleaner = new CgroupCleaner(CgroupVersion, options.CgroupRoot);
        // runc's init re-executes itself from a protected copy unless it already runs from a sealed one (SealedBinary);
        // crun does not re-execute itself.
        if (options.Name == "runc" && options.RunFromSealedCopy) _sealed = SealedBinary.For(options.BinaryPath, _logger, options.CommandTimeout);
    }

    /// <summary>A runtime for what <see cref="RuntimeDetector"/> chose.</summary>
    public static RuncRuntime FromSelection(RuntimeSelection selection, string stateRoot, ILogger<RuncRuntime>? logger = null) =>
        new(new RuncRuntimeOptions { BinaryPath = selection.Path, Name = selection.Name, Version = selection.Version, StateRoot = stateRoot }, logger);

    public string Name => _options.Name;
    public string Version => _options.Version;
    public string BinaryPath => _options.BinaryPath;
    public string StateRoot => _options.StateRoot;
    public CgroupVersion CgroupVersion { get; }
    internal RuncRuntimeOptions Options => _options;
    internal CgroupCleaner Cleaner { get; }
    internal ILogger Logger => _logger;

    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")]
    private static partial Regex IdPattern();

    public ICgroupStatsReader StatsReader(string containerId) =>
        CgroupStats.For(CgroupVersion, SpecBuilder.CgroupsPathFor(containerId), _options.CgroupRoot);

    public async Task<IRunningContainer> StartAsync(ContainerSpec spec, string bundleDir, ContainerIo io, CancellationToken ct)
    {
        if (!IdPattern().IsMatch(spec.Id)) throw new ContainerStartException($"invalid container id \"{spec.Id}\": use letters, digits, '_', '.', '-'");
        bundleDir = Path.GetFullPath(bundleDir);
        _logger.Starting(spec.Id, Name, bundleDir);
        // The network namespace (bridge mode) exists before the container and is owned by it once started.
        var (isolation, network) = await PrepareIsolationAsync(spec, ct);
        try
        {
            List<SpecOpt> gpus = spec.Gpus is { Devices.Count: > 0 } g ? [Gpus.GpuSpecOpts.WithGpus(g)] : [];
            SpecOpt names;
            try { names = WriteNameFiles(spec, spec.NameFilesDir ?? bundleDir, network); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                RemoveBundle(bundleDir, spec.NameFilesDir);
                throw new ContainerStartException($"container {spec.Id}: writing its /etc files failed: {e.Message}", e);
            }
            return await StartPreparedAsync(spec, bundleDir, io, [.. isolation, names, .. gpus, .. _options.ExtraSpecOptions], network, ct);
        }
        catch
        {
            await ReleaseNetworkAsync(network);
            throw;
        }
    }

    private async Task<IRunningContainer> StartPreparedAsync(ContainerSpec spec, string bundleDir, ContainerIo io, List<SpecOpt> extra, Network.NetworkAttachment? network, CancellationToken ct)
    {
        var sw = Stopwatch.StartNew();
        var pidFile = Path.Combine(bundleDir, PidFile);
        string program;
        try { program = _sealed is null ? _options.BinaryPath : await _sealed.PathAsync(ct); }
        catch
        {
            RemoveBundle(bundleDir, spec.NameFilesDir);
            throw;
        }
        ChildExit run;
        LogRelay? relay = null;
        bool hasPoststopHooks;
        try
        {
            var config = SpecBuilder.ForContainer(spec, extra);
            hasPoststopHooks = config.Hooks?.Poststop is { Count: > 0 };
            Directory.CreateDirectory(bundleDir);
            Directory.CreateDirectory(_options.StateRoot);
            // config.json holds the container's environment, secrets included: owner-only from its creation.
            var configPath = Path.Combine(bundleDir, ConfigFile);
            File.Delete(configPath);
            // A few kilobytes: written at once, without an asynchronous stream's machinery.
            using (var file = new FileStream(configPath, new FileStreamOptions
            {
                Mode = FileMode.CreateNew, Access = FileAccess.Write, UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite, BufferSize = 0,
            }))
                file.Write(config.ToUtf8Json());
            File.Delete(Path.Combine(bundleDir, LogFile));
            File.Delete(pidFile);
            // Continues the job's log files here (a stream with none yet gets its file with its first bytes), and makes the FIFOs.
            relay = LogRelay.Start(spec.Id, bundleDir, io, _logger);
            run = LaunchRun(program, spec.Id, bundleDir, pidFile, relay);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException)
        {
            relay?.Dispose();
            RemoveBundle(bundleDir, spec.NameFilesDir);
            _logger.StartFailed(spec.Id, e.Message);
            throw new ContainerStartException($"container {spec.Id}: {e.Message}", e);
        }

        // From here on the container may exist: every failure deletes it.
        ChildExit exit;
        try
        {
            using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
            cts.CancelAfter(_options.StartTimeout);
            (int Code, int? Signal) ran;
            try { ran = await run.Task.WaitAsync(cts.Token); }
            catch (OperationCanceledException)
            {
                run.Kill();
                // Reaped before anything is removed: a `run` still alive could make the cgroups after their removal.
                await run.Task;
                if (ct.IsCancellationRequested) throw;
                throw new ContainerStartException($"{Name} run {spec.Id} did not finish within {_options.StartTimeout.TotalSeconds:0.#} s");
            }
            // The container's processes hold their own write ends now (or there is no container).
            relay.DetachKeepers();
            if (ran.Code != 0) throw new ContainerStartException($"{Name} could not start container {spec.Id}: {LogReason(bundleDir, ran.Code)}");
            // `run --detach` has exited, so the container's init is now our child (we are its subreaper) and
            // its pid cannot be reused before we reap it, even if it has already exited.
            exit = ChildExit.Watch(ReadPid(pidFile));
        }
        catch (Exception e)
        {
            await AbortStartAsync(spec.Id, bundleDir, spec.NameFilesDir);
            await relay.StopAsync(_options.KillTimeout);
            relay.Dispose();
            if (e is OperationCanceledException && ct.IsCancellationRequested) throw;
            _logger.StartFailed(spec.Id, e.Message);
            throw e as ContainerStartException ?? new ContainerStartException($"container {spec.Id}: {e.Message}", e);
        }
        _logger.Started(spec.Id, sw.Elapsed.TotalMilliseconds);
        return new RuncContainer(this, spec.Id, bundleDir, exit, relay, network, hasPoststopHooks, spec.NameFilesDiscarded ? null : spec.NameFilesDir);
    }

    private string[] GlobalArgs(string bundleDir) =>
        ["--root", _options.StateRoot, "--log", Path.Combine(bundleDir, LogFile), "--log-format", "json"];

    private static string LogReason(string bundleDir, int exitCode)
    {
        var errors = ReadLogErrors(bundleDir);
        return errors.Count > 0 ? string.Join("; ", errors) : $"exit {exitCode}, nothing in its log";
    }

    private static int ReadPid(string pidFile)
    {
        var text = Libc.ReadSmallFile(pidFile)?.Trim() ?? "";
        return int.TryParse(text, out var pid) && pid > 0
            ? pid
            : throw new ContainerStartException($"the runtime wrote no pid to {pidFile}");
    }

    // `runc ... run --detach`, spawned with the relay's FIFOs opened as fds 1 and 2 and /dev/null as fd 0 by the child
    // itself (posix_spawn's file actions), which the container's init inherits. Only that child opens the FIFOs for
    // writing, so no other child of this process holds a write end, and the relay sees end of file when the container's
    // processes are gone. (This was `sh -c 'exec runc ... >FIFO'`: the same guarantee, one program start more.)
    // The runtime process is our child, reaped by its ChildExit (.NET's Process does not know it).
    // PROGRAM is the binary's path or its sealed copy's; runc's argv[0] stays the binary's path.
    private ChildExit LaunchRun(string program, string id, string bundleDir, string pidFile, LogRelay relay)
    {
        EnsureSubreaper();
        List<string> argv = [_options.BinaryPath, .. GlobalArgs(bundleDir), "run", "--detach", "--bundle", bundleDir, "--pid-file", pidFile, id];
        var env = new List<string>();
        foreach (System.Collections.DictionaryEntry e in Environment.GetEnvironmentVariables()) env.Add($"{e.Key}={e.Value}");
        // `run --detach` is one short sequence of steps: a scheduler slot per CPU only adds idle Go threads that spin
        // (about 5 % of its CPU on 2 cores, bench/README.md's sixteenth round).
        if (_options is { Name: "runc", GoMaxProcs: { } procs } && Environment.GetEnvironmentVariable("GOMAXPROCS") is null) env.Add($"GOMAXPROCS={procs}");
        var pid = Libc.Spawn(program, argv, env,
        [
            new(0, "/dev/null", Libc.O_RDONLY),
            new(1, relay.StdoutFifo, Libc.O_WRONLY),
            new(2, relay.StderrFifo, Libc.O_WRONLY),
        ]);
        return ChildExit.Watch(pid);
    }

    private static int s_subreaper;

    // Process-wide and permanent: orphans of this process's children come to it. Container inits are
    // reaped by their ChildExit, any other adopted orphan by the OrphanReaper.
    private static void EnsureSubreaper()
    {
        if (Interlocked.Exchange(ref s_subreaper, 1) != 0) return;
        Libc.BecomeChildSubreaper();
        OrphanReaper.Start();
    }

    // A failed `run` leaves nothing running, but a timed-out one may have: `delete --force` kills it, and
    // the OrphanReaper reaps its init, which no ChildExit watches. A `run` killed (a cancelled or timed-out start) after
    // it made the container's cgroups and before it recorded its state leaves cgroups that `delete` does not know (it
    // removes such a state directory only): they are removed here, with anything still in them.
    private async Task AbortStartAsync(string id, string bundleDir, string? nameFilesDir)
    {
        try
        {
            await DeleteAsync(id, CancellationToken.None);
            await Cleaner.RemoveAsync(SpecBuilder.CgroupParent, id, _options.KillTimeout, CancellationToken.None);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            _logger.CleanupIncomplete(id, e.Message);
        }
        finally
        {
            RemoveBundle(bundleDir, nameFilesDir);
        }
    }

    /// <summary>The error messages runc wrote to --log (JSON lines with level and msg).</summary>
    internal static IReadOnlyList<string> ReadLogErrors(string bundleDir)
    {
        var path = Path.Combine(bundleDir, LogFile);
        var errors = new List<string>();
        if (!File.Exists(path)) return errors;
        foreach (var line in File.ReadLines(path))
        {
            if (string.IsNullOrWhiteSpace(line)) continue;
            try
            {
                using var doc = JsonDocument.Parse(line);
                var level = doc.RootElement.TryGetProperty("level", out var l) ? l.GetString() : null;
                var msg = doc.RootElement.TryGetProperty("msg", out var m) ? m.GetString() : null;
                if (level is "error" or "fatal" or "panic" && !string.IsNullOrEmpty(msg)) errors.Add(msg);
            }
            catch (JsonException)
            {
                errors.Add(line.Trim()); // not JSON: a runtime without --log-format json support; keep the text
            }
        }
        return errors;
    }

    /// <summary><paramref name="signal"/> to the container's main process (`kill ID SIGNAL`); a container that is gone or
    /// stopped is not an error.</summary>
    internal async Task SignalAsync(string id, string signal, CancellationToken ct)
    {
        _logger.Signalling(id, signal);
        var r = await Command.RunAsync(_options.BinaryPath, ["--root", _options.StateRoot, "kill", id, signal], _options.CommandTimeout, ct);
        if (!r.Ok && !IsGone(r.Message))
            throw new InvalidOperationException($"{Name} kill {id} {signal} failed: {r.Message}");
    }

    /// <summary>SIGKILL to every process of the container; a container that is gone or stopped is not an error.</summary>
    internal async Task KillAsync(string id, CancellationToken ct)
    {
        _logger.Killing(id);
        var r = await Command.RunAsync(_options.BinaryPath, ["--root", _options.StateRoot, "kill", "--all", id, "KILL"], _options.CommandTimeout, ct);
        if (!r.Ok && !IsGone(r.Message))
            throw new InvalidOperationException($"{Name} kill {id} failed: {r.Message}");
    }

    /// <summary>`delete --force ID` (removes the container's state and its cgroup); a missing container is not an error.</summary>
    internal async Task DeleteAsync(string id, CancellationToken ct)
    {
        var r = await Command.RunAsync(_options.BinaryPath, ["--root", _options.StateRoot, "delete", "--force", id], _options.CommandTimeout, ct);
        if (!r.Ok && !IsGone(r.Message))
            throw new InvalidOperationException($"{Name} delete {id} failed: {r.Message}");
        _logger.Deleted(id);
    }

    private static bool IsGone(string message) =>
        message.Contains("not running", StringComparison.OrdinalIgnoreCase)
        || message.Contains("does not exist", StringComparison.OrdinalIgnoreCase)
        || message.Contains("not exist", StringComparison.OrdinalIgnoreCase)
        || message.Contains("no such file", StringComparison.OrdinalIgnoreCase);

    /// <summary>Deletes the files the runtime made in the bundle (and in <paramref name="nameFilesDir"/>, the container's
    /// /etc name files when they are elsewhere), then each directory once empty: never recursively, so that nothing it did
    /// not make is deleted.</summary>
    internal static void RemoveBundle(string bundleDir, string? nameFilesDir = null)
    {
        RemoveOwnFiles(bundleDir, [ConfigFile, LogFile, PidFile, PidFileBeingWritten, HostnameFile, HostsFile, ResolvConfFile, LogRelay.StdoutFifoName, LogRelay.StderrFifoName]);
        if (nameFilesDir is not null) RemoveOwnFiles(nameFilesDir, [HostnameFile, HostsFile, ResolvConfFile]);
    }

    private static void RemoveOwnFiles(string dir, string[] names)
    {
        foreach (var f in names)
        {
            try { File.Delete(Path.Combine(dir, f)); }
            catch (DirectoryNotFoundException) { }
        }
        try
        {
            if (Directory.Exists(dir) && !Directory.EnumerateFileSystemEntries(dir).Any()) Directory.Delete(dir);
        }
        catch (IOException) { }
    }

    public sealed record ListedContainer(string Id, int Pid, string Status, string Bundle);

    /// <summary>`list --format json` of our state root.</summary>
    public async Task<IReadOnlyList<ListedContainer>> ListAsync(CancellationToken ct)
    {
        if (!Directory.Exists(_options.StateRoot)) return [];
        // runc 1.1's list reads the state root, then stats each entry, and fails when one is removed in between (a container
        // deleted meanwhile, by another owner of this root, e.g. a parallel test run): a new listing no longer holds it.
        var r = await Command.RunAsync(_options.BinaryPath, ["--root", _options.StateRoot, "list", "--format", "json"], _options.CommandTimeout, ct);
        for (var retry = 0; !r.Ok && retry < 3 && IsGone(r.Message); retry++)
            r = await Command.RunAsync(_options.BinaryPath, ["--root", _options.StateRoot, "list", "--format", "json"], _options.CommandTimeout, ct);
        if (!r.Ok) throw new InvalidOperationException($"{Name} list failed: {r.Message}");
        var list = new List<ListedContainer>();
        var text = r.Stdout.Trim();
        if (text.Length == 0 || text == "null") return list;
        using var doc = JsonDocument.Parse(text);
        foreach (var e in doc.RootElement.EnumerateArray())
        {
            list.Add(new ListedContainer(
                e.GetProperty("id").GetString()!,
                e.TryGetProperty("pid", out var pid) && pid.ValueKind == JsonValueKind.Number ? pid.GetInt32() : 0,
                e.TryGetProperty("status", out var st) ? st.GetString() ?? "" : "",
                e.TryGetProperty("bundle", out var b) ? b.GetString() ?? "" : ""));
        }
        return list;
    }

    public async Task<IReadOnlyList<string>> CleanupOrphansAsync(string idPrefix, CancellationToken ct)
    {
        if (string.IsNullOrEmpty(idPrefix)) throw new ArgumentException("an id prefix is required: it protects other owners' containers", nameof(idPrefix));
        var removed = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var c in await ListAsync(ct))
        {
            if (!c.Id.StartsWith(idPrefix, StringComparison.Ordinal)) continue;
            if (c.Status != "stopped") await KillAsync(c.Id, ct);
            await DeleteAsync(c.Id, ct);
            if (c.Bundle.Length > 0) RemoveBundle(c.Bundle);
            _logger.OrphanRemoved(c.Id, c.Status);
            removed.Add(c.Id);
        }
        // Cgroups the runtime no longer knows: a delete that failed half-way, a state root removed by hand,
        // or a container whose `run` was killed before it recorded its state.
        // Network namespaces, address leases and NAT rules of bridge-mode containers.
        if (BridgeNetwork is { } bridge)
            foreach (var id in await bridge.CleanupOrphansAsync(idPrefix, ct)) removed.Add(id);
        var leftovers = await Cleaner.RemoveLeftoversAsync(SpecBuilder.CgroupParent, idPrefix, new HashSet<string>(), _options.KillTimeout, ct);
        foreach (var name in leftovers)
        {
            if (removed.Add(name)) _logger.LeftoverCgroupRemoved(name);
        }
        return removed.ToList();
    }
}
