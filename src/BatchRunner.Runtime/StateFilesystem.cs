using static BatchRunner.Native.Libc;

namespace BatchRunner.Runtime;

/// <summary>
/// DATA/state: a tmpfs that the node mounts for what lives only as long as its containers and is not a job's data:
/// the OCI runtime's state root and the containers' bundles (config.json, which holds the job's environment with its
/// secrets; runc's log; the pid file; the stdout/stderr FIFOs). containerd keeps the same under /run for the same
/// reasons:
/// <list type="bullet">
/// <item>none of it should outlive a reboot, which ends the containers too;</item>
/// <item>a secret in config.json never reaches a disk;</item>
/// <item>the dozen files made and deleted per container cost a page of memory each, not a disk inode. On this
/// project's ext4 hosts without a journal each new inode skipped every inode of its group deleted in the last 5–10 s
/// (<c>recently_deleted</c>), about a fifth of the server's CPU per job at 30 jobs/s.</item>
/// </list>
/// The job's writes never land here: its root layer, /outputs and its /etc name files are on its disk
/// (the server's <c>DiskPhase</c>), so the size below only bounds the node's own files (a few kB per container).
/// </summary>
/// <remarks>
/// The server's <c>NodeJanitor</c> owns it: it mounts it at start before it looks for a crashed predecessor's
/// containers, keeps it as it is when it is mounted already (that predecessor's state is in it), and unmounts it on a
/// clean stop once no container state or bundle is left in it. A crash leaves it mounted, with the state the janitor
/// needs at the next start.
/// </remarks>
public static class StateFilesystem
{
    /// <summary>Its size limit: thousands of containers' bundles and state (a few kB to tens of kB each).</summary>
    public const long SizeBytes = 256L << 20;

    /// <summary>Mounts the tmpfs at <paramref name="dir"/> unless one is mounted there already.</summary>
    /// <returns>True when it mounted it now; false when it was mounted already.</returns>
    /// <exception cref="InvalidOperationException">It cannot be mounted (not root, no CAP_SYS_ADMIN).</exception>
    public static bool EnsureMounted(string dir)
    {
        Directory.CreateDirectory(dir);
        if (FilesystemTypeAt(dir) == "tmpfs") return false;
        // Owner-only (root): config.json holds the job's secrets. noexec: nothing here is ever run.
        if (mount("tmpfs", dir, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, $"mode=0700,size={SizeBytes}") != 0)
            throw new InvalidOperationException($"mounting the node's state tmpfs at {dir} failed: {Describe(Errno)}; " +
                "a worker must run as root (it mounts each job's rootfs as well)");
        return true;
    }

    /// <summary>Unmounts the tmpfs at <paramref name="dir"/> when nothing is left in <paramref name="keptDirs"/> (the
    /// runtime's state root and the bundles' parent): a container still there keeps it, and the next start's janitor
    /// removes that container.</summary>
    /// <returns>Null when it was unmounted or was not mounted; otherwise why it stays.</returns>
    public static string? TryUnmount(string dir, params string[] keptDirs)
    {
        if (FilesystemTypeAt(dir) != "tmpfs") return null;
        foreach (var kept in keptDirs)
            if (Directory.Exists(kept) && Directory.EnumerateFileSystemEntries(kept).Any())
                return $"{kept} is not empty";
        if (umount2(dir, UMOUNT_NOFOLLOW) == 0) return null;
        return $"umount: {Describe(Errno)}";
    }

    /// <summary>The filesystem type of the topmost mount at exactly <paramref name="path"/> ("tmpfs"); null when it is not
    /// a mount point.</summary>
    public static string? FilesystemTypeAt(string path)
    {
        var real = RealPath(path) ?? Path.GetFullPath(path);
        real = real.Length > 1 ? real.TrimEnd('/') : real;
        // The kernel escapes space, tab, newline and backslash in mount points as \ooo.
        var escaped = real.Replace("\\", "\\134").Replace(" ", "\\040").Replace("\t", "\\011").Replace("\n", "\\012");
        string? type = null;
        foreach (var line in File.ReadLines("/proc/self/mountinfo"))
        {
            // "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw": the type follows the "-" separator.
            var fields = line.Split(' ');
            if (fields.Length <= 4 || fields[4] != escaped) continue;
            var dash = Array.IndexOf(fields, "-", 5);
            if (dash > 0 && dash + 1 < fields.Length) type = fields[dash + 1]; // a later line is mounted on top
        }
        return type;
    }
}
