using BatchRunner.Native;

namespace BatchRunner.Runtime;

/// <summary>
/// Host process operations the server needs for the processes it supervises (the embedded PostgreSQL): a
/// signal, which directory a process runs in, and not passing inherited descriptors on to a child that may
/// outlive this process. Here so that the server makes no libc calls of its own.
/// </summary>
public static class HostProcesses
{
    public const int SIGINT = 2, SIGQUIT = 3, SIGKILL = 9, SIGTERM = 15;

    /// <summary>kill(2); false when the process does not exist (or may not be signalled).</summary>
    public static bool Signal(int pid, int signal) => pid > 0 && Libc.kill(pid, signal) == 0;

    /// <summary>
    /// Whether process <paramref name="pid"/>'s working directory is <paramref name="directory"/>: the same directory
    /// (device and inode), whatever symlinks lead to either. False when either cannot be read (the process is
    /// gone, or a zombie).
    /// </summary>
    public static bool WorkingDirectoryIs(int pid, string directory) =>
        Libc.TryStat(Libc.AT_FDCWD, $"/proc/{pid}/cwd", out var cwd, followTrailingSymlink: true)
        && Libc.TryStat(Libc.AT_FDCWD, directory, out var dir, followTrailingSymlink: true)
        && (cwd.DevMajor, cwd.DevMinor, cwd.Inode) == (dir.DevMajor, dir.DevMinor, dir.Inode);

    /// <summary>The executable of process <paramref name="pid"/> ("/usr/lib/postgresql/15/bin/postgres"), without the
    /// " (deleted)" the kernel adds once a package upgrade replaced the file; null when it cannot be read.</summary>
    public static string? Executable(int pid)
    {
        string? exe;
        try { exe = new FileInfo($"/proc/{pid}/exe").LinkTarget; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
        return exe is not null && exe.EndsWith(" (deleted)", StringComparison.Ordinal) ? exe[..^" (deleted)".Length] : exe;
    }

    /// <summary>
    /// Marks close-on-exec every descriptor above stderr that this process holds without it, so that none is passed
    /// on to a child it starts: descriptors it inherited (a lock that a shell's <c>flock</c> holds, one a service
    /// manager passed) would otherwise be held for as long as that child lives, possibly longer than this process.
    /// .NET opens its own descriptors close-on-exec; this process keeps them all open.
    /// </summary>
    public static void CloseInheritedDescriptorsOnExec()
    {
        foreach (var entry in Directory.EnumerateFileSystemEntries("/proc/self/fd"))
        {
            if (!int.TryParse(Path.GetFileName(entry), out var fd) || fd <= 2) continue;
            var flags = Libc.fcntl(fd, Libc.F_GETFD, 0);
            if (flags >= 0 && (flags & Libc.FD_CLOEXEC) == 0) Libc.fcntl(fd, Libc.F_SETFD, flags | Libc.FD_CLOEXEC);
        }
    }
}
