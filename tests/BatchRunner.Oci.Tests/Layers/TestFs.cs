using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;

namespace BatchRunner.Oci.Tests.Layers;

/// <summary>What the tests need to look at files the way the kernel sees them (lstat, xattrs) and to run mount(8).</summary>
internal static unsafe partial class TestFs
{
    public const uint S_IFMT = 0xF000, S_IFIFO = 0x1000, S_IFCHR = 0x2000, S_IFDIR = 0x4000, S_IFBLK = 0x6000,
        S_IFREG = 0x8000, S_IFLNK = 0xA000;

    public readonly record struct Stat(uint Mode, uint Uid, uint Gid, ulong Inode, long Size, uint Nlink,
        uint RdevMajor, uint RdevMinor, long MtimeSeconds, uint MtimeNanoseconds)
    {
        public uint Type => Mode & S_IFMT;
        public uint Permissions => Mode & 0xFFF;
    }

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int statx(int dirfd, string path, int flags, uint mask, byte* buffer);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial nint lgetxattr(string path, string name, byte* value, nuint size);

    public static Stat? TryLstat(string path)
    {
        byte* b = stackalloc byte[256];
        if (statx(-100, path, 0x100 /* AT_SYMLINK_NOFOLLOW */, 0x7ff, b) != 0) return null;
        return new Stat(*(ushort*)(b + 28), *(uint*)(b + 20), *(uint*)(b + 24), *(ulong*)(b + 32), *(long*)(b + 40),
            *(uint*)(b + 16), *(uint*)(b + 128), *(uint*)(b + 132), *(long*)(b + 112), *(uint*)(b + 120));
    }

    public static Stat Lstat(string path) => TryLstat(path) ?? throw new FileNotFoundException($"lstat {path}: errno {Marshal.GetLastPInvokeError()}");

    public static string? GetXattr(string path, string name)
    {
        var buf = new byte[4096];
        fixed (byte* p = buf)
        {
            var n = lgetxattr(path, name, p, (nuint)buf.Length);
            return n < 0 ? null : Encoding.UTF8.GetString(buf, 0, (int)n);
        }
    }

    public static void Run(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0) throw new InvalidOperationException($"{file} {string.Join(' ', args)} exited {p.ExitCode}: {err}");
    }

    public static bool IsMounted(string path) =>
        File.ReadLines("/proc/self/mountinfo").Any(l => l.Split(' ')[4] == path);

    /// <summary>Every path under <paramref name="root"/> with its type, size, mode, mtime and content hash: equal snapshots mean nothing changed.</summary>
    public static SortedDictionary<string, string> Snapshot(string root, string? exclude = null)
    {
        var result = new SortedDictionary<string, string>(StringComparer.Ordinal);
        void Walk(string dir)
        {
            foreach (var path in Directory.EnumerateFileSystemEntries(dir))
            {
                if (path == exclude) continue;
                var st = Lstat(path);
                var content = st.Type == S_IFREG ? Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(path)))
                    : st.Type == S_IFLNK ? new FileInfo(path).LinkTarget : "";
                result[path] = $"{st.Mode:x} {st.Size} {st.Nlink} {st.MtimeSeconds}.{st.MtimeNanoseconds} {content}";
                if (st.Type == S_IFDIR) Walk(path);
            }
        }
        Walk(root);
        return result;
    }
}
