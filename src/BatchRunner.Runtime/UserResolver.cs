using System.Globalization;
using System.Text;
using Microsoft.Win32.SafeHandles;
using BatchRunner.Native;

namespace BatchRunner.Runtime;

/// <summary>The numeric identity a container process runs as.</summary>
public sealed record ResolvedUser(uint Uid, uint Gid, IReadOnlyList<uint> AdditionalGids);

public sealed class UserResolutionException(string message) : Exception(message);

/// <summary>
/// Resolves an image's "user" setting (Docker syntax: "", "uid", "uid:gid", "name", "name:group",
/// "uid:group") against the image's own /etc/passwd and /etc/group.
/// The rootfs is untrusted: its /etc/passwd may be a symlink to the host's /etc/shadow, or a FIFO that
/// would block a reader. Paths are therefore resolved as if the rootfs were "/" (absolute and ".."
/// symlinks cannot leave it), the final open refuses symlinks and non-regular files never block, and
/// at most <see cref="MaxFileBytes"/> are read. This relies on nobody changing the rootfs while it
/// is resolved (it is an unpacked image and the container has not started).
/// </summary>
public static class UserResolver
{
    public const int MaxFileBytes = 4 << 20;
    private const int MaxSymlinks = 40;

    public static ResolvedUser Resolve(string rootfs, string? user)
    {
        if (string.IsNullOrEmpty(user)) return new ResolvedUser(0, 0, []);
        var colon = user.IndexOf(':');
        var userPart = colon < 0 ? user : user[..colon];
        var groupPart = colon < 0 ? null : user[(colon + 1)..];
        if (userPart.Length == 0) throw new UserResolutionException($"user \"{user}\" has no user part");
        if (groupPart is { Length: 0 }) throw new UserResolutionException($"user \"{user}\" has an empty group part");

        PasswdEntry? entry;
        uint uid;
        if (TryParseId(userPart, out uid))
        {
            entry = ReadPasswd(rootfs)?.FirstOrDefault(p => p.Uid == uid);
        }
        else
        {
            var passwd = ReadPasswd(rootfs) ?? throw new UserResolutionException($"user \"{userPart}\" not found: the image has no /etc/passwd");
            entry = passwd.FirstOrDefault(p => p.Name == userPart)
                ?? throw new UserResolutionException($"user \"{userPart}\" not found in the image's /etc/passwd");
            uid = entry.Uid;
        }

        uint gid;
        IReadOnlyList<uint> additional = [];
        if (groupPart is not null)
        {
            if (!TryParseId(groupPart, out gid))
            {
                var groups = ReadGroups(rootfs) ?? throw new UserResolutionException($"group \"{groupPart}\" not found: the image has no /etc/group");
                gid = (groups.FirstOrDefault(g => g.Name == groupPart)
                    ?? throw new UserResolutionException($"group \"{groupPart}\" not found in the image's /etc/group")).Gid;
            }
        }
        else
        {
            // Docker: a uid that /etc/passwd does not list runs with gid 0.
            gid = entry?.Gid ?? 0;
            if (entry is not null)
            {
                additional = (ReadGroups(rootfs) ?? [])
                    .Where(g => g.Members.Contains(entry.Name) && g.Gid != gid)
                    .Select(g => g.Gid).Distinct().ToList();
            }
        }
        return new ResolvedUser(uid, gid, additional);
    }

    private static bool TryParseId(string s, out uint id) =>
        uint.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out id);

    private sealed record PasswdEntry(string Name, uint Uid, uint Gid);
    private sealed record GroupEntry(string Name, uint Gid, string[] Members);

    private static List<PasswdEntry>? ReadPasswd(string rootfs)
    {
        var text = ReadConfined(rootfs, "/etc/passwd");
        if (text is null) return null;
        var list = new List<PasswdEntry>();
        foreach (var line in text.Split('\n'))
        {
            // name:password:uid:gid:gecos:home:shell
            var f = line.Split(':');
            if (f.Length < 4 || f[0].Length == 0 || !TryParseId(f[2], out var uid) || !TryParseId(f[3], out var gid)) continue;
            list.Add(new PasswdEntry(f[0], uid, gid));
        }
        return list;
    }

    private static List<GroupEntry>? ReadGroups(string rootfs)
    {
        var text = ReadConfined(rootfs, "/etc/group");
        if (text is null) return null;
        var list = new List<GroupEntry>();
        foreach (var line in text.Split('\n'))
        {
            // name:password:gid:member,member
            var f = line.Split(':');
            if (f.Length < 3 || f[0].Length == 0 || !TryParseId(f[2], out var gid)) continue;
            var members = f.Length > 3 ? f[3].Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries) : [];
            list.Add(new GroupEntry(f[0], gid, members));
        }
        return list;
    }

    /// <summary>Reads <paramref name="pathInRootfs"/> as the container would see it, never leaving the
    /// rootfs. Null when it does not exist; throws when it is not a regular file or is too big.</summary>
    public static string? ReadConfined(string rootfs, string pathInRootfs)
    {
        var resolved = ResolveConfined(rootfs, pathInRootfs);
        if (resolved is null) return null;
        // O_NOFOLLOW: a symlink swapped in after resolution fails instead of being followed;
        // O_NONBLOCK: opening a FIFO returns at once instead of waiting for a writer.
        var fd = Libc.open(resolved, Libc.O_RDONLY | Libc.O_CLOEXEC | Libc.O_NONBLOCK | Libc.O_NOFOLLOW);
        if (fd < 0)
        {
            var errno = System.Runtime.InteropServices.Marshal.GetLastPInvokeError();
            if (errno == 2) return null; // ENOENT
            throw new UserResolutionException($"cannot open the image's {pathInRootfs}: errno {errno}");
        }
        using var handle = new SafeFileHandle(fd, ownsHandle: true);
        if (!Libc.IsRegularFile(fd))
            throw new UserResolutionException($"the image's {pathInRootfs} is not a regular file");
        using var stream = new FileStream(handle, FileAccess.Read, bufferSize: 0);
        // Sized by the file (fstat), one byte over to see it grow meanwhile: a buffer of the limit (4 MiB) was a large-object
        // heap allocation twice per job (passwd, group), each zeroed and each bringing the next background GC closer.
        var size = stream.Length;
        if (size > MaxFileBytes) throw new UserResolutionException($"the image's {pathInRootfs} is larger than {MaxFileBytes} bytes");
        var buffer = new byte[size + 1];
        var total = ReadUpTo(stream, buffer);
        if (total == buffer.Length)
        {
            // It grew after the fstat: read it again within the limit.
            stream.Position = 0;
            buffer = new byte[MaxFileBytes + 1];
            total = ReadUpTo(stream, buffer);
            if (total > MaxFileBytes) throw new UserResolutionException($"the image's {pathInRootfs} is larger than {MaxFileBytes} bytes");
        }
        return Encoding.UTF8.GetString(buffer, 0, total);
    }

    private static int ReadUpTo(FileStream stream, byte[] buffer)
    {
        int total = 0, n;
        while (total < buffer.Length && (n = stream.Read(buffer, total, buffer.Length - total)) > 0) total += n;
        return total;
    }

    /// <summary>
    /// Resolves <paramref name="pathInRootfs"/> component by component, treating <paramref name="rootfs"/>
    /// as "/": an absolute symlink target restarts at the rootfs, ".." stops at it. Returns a host path
    /// whose every component is a real directory or, last, a non-symlink; null when a component is missing.
    /// </summary>
    public static string? ResolveConfined(string rootfs, string pathInRootfs)
    {
        var root = Path.GetFullPath(rootfs).TrimEnd('/');
        var pending = new Stack<string>(Split(pathInRootfs).Reverse());
        var current = new List<string>();
        var links = 0;
        while (pending.Count > 0)
        {
            var part = pending.Pop();
            if (part == ".") continue;
            if (part == "..")
            {
                if (current.Count > 0) current.RemoveAt(current.Count - 1);
                continue;
            }
            var candidate = root + "/" + string.Join('/', current.Append(part));
            var info = new FileInfo(candidate);
            if (info.LinkTarget is { } target)
            {
                if (++links > MaxSymlinks) throw new UserResolutionException($"too many symlinks resolving the image's {pathInRootfs}");
                if (target.StartsWith('/')) current.Clear();
                foreach (var t in Split(target).Reverse()) pending.Push(t);
                continue;
            }
            if (!info.Exists && !Directory.Exists(candidate)) return null;
            if (pending.Count > 0 && !Directory.Exists(candidate)) return null;
            current.Add(part);
        }
        return root + "/" + string.Join('/', current);
    }

    private static string[] Split(string path) => path.Split('/', StringSplitOptions.RemoveEmptyEntries);
}
