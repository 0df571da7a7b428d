using System.Text;
using BatchRunner.Oci.Layers;
using static BatchRunner.Native.Libc;

namespace BatchRunner.Oci.Snapshots;

/// <summary>Finds and removes mounts that a crashed worker left behind.</summary>
public static class MountCleanup
{
    /// <summary>
    /// Unmounts every mount point strictly below <paramref name="dir"/> (never <paramref name="dir"/> itself, which
    /// may be the volume the data lives on), deepest first; busy ones are detached lazily.
    /// </summary>
    /// <returns>The mount points unmounted, in the order they were.</returns>
    public static IReadOnlyList<string> UnmountAllUnder(string dir)
    {
        var root = RealPath(dir) ?? Path.GetFullPath(dir);
        var prefix = root.TrimEnd('/') + "/";
        var unmounted = new List<string>();
        // Stacked mounts on one path need one umount each; re-read until nothing under dir is left.
        for (var round = 0; round < 16; round++)
        {
            var points = MountPoints().Where(p => p.StartsWith(prefix, StringComparison.Ordinal)).ToList();
            if (points.Count == 0) break;
            // Later mounts are listed later; reversing and ordering by depth unmounts children before parents.
            points.Reverse();
            foreach (var point in points.OrderByDescending(p => p.Count(c => c == '/')))
            {
                if (Unmount(point)) unmounted.Add(point);
            }
        }
        return unmounted;
    }

    /// <summary>Mount points from /proc/self/mountinfo, in mount order, with their octal escapes decoded.</summary>
    public static IReadOnlyList<string> MountPoints()
    {
        var result = new List<string>();
        foreach (var line in File.ReadLines("/proc/self/mountinfo"))
        {
            // "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw": field 5 is the mount point.
            var fields = line.Split(' ');
            if (fields.Length > 4) result.Add(Unescape(fields[4]));
        }
        return result;
    }

    /// <summary>True when <paramref name="dir"/> or any path below it is a mount point now.</summary>
    public static bool AnyMountAtOrUnder(string dir)
    {
        var root = (RealPath(dir) ?? Path.GetFullPath(dir)).TrimEnd('/');
        return MountPoints().Any(p => p == root || p.StartsWith(root + "/", StringComparison.Ordinal));
    }

    public static bool IsMountPoint(string path)
    {
        var real = RealPath(path) ?? Path.GetFullPath(path);
        return MountPoints().Contains(real.Length > 1 ? real.TrimEnd('/') : real);
    }

    /// <returns>True when unmounted (or detached); false when it was not a mount point any more.</returns>
    internal static bool Unmount(string point)
    {
        if (umount2(point, UMOUNT_NOFOLLOW) == 0) return true;
        var errno = Errno;
        if (errno is EINVAL or ENOENT) return false;
        if (errno == EBUSY && umount2(point, MNT_DETACH | UMOUNT_NOFOLLOW) == 0) return true;
        errno = Errno;
        throw new IOException($"cannot unmount {point}: {ErrorText(errno)} (errno {errno})");
    }

    // The kernel escapes only space, tab, newline and backslash (as \ooo), all ASCII, so decoding per char is exact.
    private static string Unescape(string field)
    {
        if (!field.Contains('\\')) return field;
        var sb = new StringBuilder(field.Length);
        for (var i = 0; i < field.Length; i++)
        {
            if (field[i] == '\\' && IsOctal(field, i + 1))
            {
                sb.Append((char)Convert.ToInt32(field.Substring(i + 1, 3), 8));
                i += 3;
            }
            else sb.Append(field[i]);
        }
        return sb.ToString();
    }

    private static bool IsOctal(string s, int at) =>
        at + 3 <= s.Length && s[at] is >= '0' and <= '3' && s[at + 1] is >= '0' and <= '7' && s[at + 2] is >= '0' and <= '7';
}
