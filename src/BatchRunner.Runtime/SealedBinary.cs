using BatchRunner.Native;
using Microsoft.Extensions.Logging;
using Microsoft.Win32.SafeHandles;

namespace BatchRunner.Runtime;

/// <summary>
/// runc started from a sealed in-memory copy of its own binary rather than from its file. Against CVE-2019-5736 (a
/// container rewriting the host's runc through <c>/proc/self/exe</c>) every <c>runc init</c> first makes sure it runs
/// from something the container cannot write: runc 1.1 re-executes itself from a read-only bind mount of its binary
/// made for that one start (three mounts in the host's namespace, one more program start per container), older ones
/// from a fresh memfd copy of 9 MB. A memfd that carries every seal is already safe, and runc checks that first: such a
/// binary "cannot be written to no matter what (so sharing it isn't a bad thing)" (runc's cloned_binary.c), so its init
/// skips the re-execution. This class keeps one such copy for all the containers this process starts; the kernel
/// refuses any write to it, from a container, from this process or from root.
/// </summary>
/// <remarks>
/// One per binary in a process (<see cref="For"/>), kept for its life like the runtime that uses it. The copy follows
/// the file: each start compares the binary's status (device, inode, size, mtime, mode, owner, links) with that of the file copied, and a
/// replaced binary (a package upgrade) is copied again before its first use, so a container never runs a runc older
/// than the one installed. The copy is executed as <c>/proc/self/fd/N</c>, which the child of posix_spawn resolves in
/// its own table (a copy of ours, close-on-exec descriptors included until the exec succeeds); it is never inherited by
/// runc or the container. So no copy is ever closed, a superseded one included (one per upgrade): a start may hold its
/// path, and a descriptor number closed and reused would name another file. Where a sealed executable memfd cannot be
/// made or run (a kernel without sealing, Linux 6.3's <c>vm.memfd_noexec = 2</c>), it logs why once and the file is
/// executed, as before.
/// </remarks>
internal sealed class SealedBinary
{
    private static readonly System.Collections.Concurrent.ConcurrentDictionary<string, SealedBinary> s_all = new();

    /// <summary>The process's one sealed copy of <paramref name="path"/> (made on its first use).</summary>
    public static SealedBinary For(string path, ILogger logger, TimeSpan checkTimeout) =>
        s_all.GetOrAdd(path, p => new SealedBinary(p, logger, checkTimeout));

    private readonly string _path;
    private readonly ILogger _logger;
    private readonly TimeSpan _checkTimeout;
    private readonly SemaphoreSlim _copying = new(1, 1);
    private readonly List<SafeFileHandle> _superseded = [];
    private volatile Copy? _current;
    private volatile bool _unavailable;

    private sealed record Copy(SafeFileHandle Handle, Libc.FileStatus Source, string ExecPath);

    internal SealedBinary(string path, ILogger logger, TimeSpan checkTimeout)
    {
        _path = path;
        _logger = logger;
        _checkTimeout = checkTimeout;
    }

    /// <summary>How many copies have been made (tests).</summary>
    internal int Copies { get; private set; }

    /// <summary>
    /// What to execute for a start now: <c>/proc/self/fd/N</c> of a sealed copy of the binary as its file is now, or the
    /// file's own path where no copy can be used.
    /// </summary>
    public async ValueTask<string> PathAsync(CancellationToken ct)
    {
        if (_unavailable) return _path;
        var current = _current;
        if (current is not null && IsCopyOf(current)) return current.ExecPath;
        await _copying.WaitAsync(ct);
        try
        {
            current = _current;
            if (_unavailable) return _path;
            if (current is not null && IsCopyOf(current)) return current.ExecPath;
            var made = await MakeCopyAsync(ct);
            if (made is null) return _path;
            if (current is not null) _superseded.Add(current.Handle);
            _current = made;
            return made.ExecPath;
        }
        finally
        {
            _copying.Release();
        }
    }

    // The whole status: a change of its mode or owner also makes a new copy, which is only the safer for it.
    private bool IsCopyOf(Copy copy) =>
        Libc.TryStat(Libc.AT_FDCWD, _path, out var now, followTrailingSymlink: true) && now == copy.Source;

    // A copy, checked by running it (`--version`), or null (and the file from now on) where that cannot be done.
    private async Task<Copy?> MakeCopyAsync(CancellationToken ct)
    {
        SafeFileHandle handle;
        Libc.FileStatus source;
        try
        {
            // A script is executed by its interpreter through the path, which the descriptor's close-on-exec has closed by then.
            if (!IsElf(_path)) return GiveUp("it is not an ELF program (a script runs from its file)");
            handle = Libc.SealedCopy(_path, Path.GetFileName(_path), out source);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return GiveUp(e.Message);
        }
        var copy = new Copy(handle, source, $"/proc/self/fd/{handle.DangerousGetHandle()}");
        CommandResult check;
        try
        {
            check = await Command.RunAsync(copy.ExecPath, ["--version"], _checkTimeout, ct);
        }
        catch (Exception e)
        {
            handle.Dispose();
            if (e is OperationCanceledException && ct.IsCancellationRequested) throw;
            return GiveUp($"running it failed: {e.Message}");
        }
        if (!check.Ok)
        {
            handle.Dispose();
            return GiveUp($"running it failed: exit {check.ExitCode}: {check.Message}");
        }
        Copies++;
        return copy;
    }

    private static bool IsElf(string path)
    {
        using var file = File.OpenHandle(path);
        Span<byte> magic = stackalloc byte[4];
        return RandomAccess.Read(file, magic, 0) == 4 && magic.SequenceEqual("\u007FELF"u8);
    }

    private Copy? GiveUp(string reason)
    {
        _unavailable = true;
        _logger.SealedBinaryUnavailable(_path, reason);
        return null;
    }
}
