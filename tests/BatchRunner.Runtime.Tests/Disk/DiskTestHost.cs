using System.Diagnostics;
using System.Runtime.InteropServices;

namespace BatchRunner.Runtime.Tests.Disk;

/// <summary>How the tests look at volumes from outside: mountinfo, sysfs, st_blocks, umount(8), losetup(8).</summary>
internal static unsafe partial class DiskTestHost
{
    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int statx(int dirfd, string path, int flags, uint mask, byte* buffer);

    /// <summary>Bytes the host's filesystem has allocated to <paramref name="file"/> (st_blocks × 512).</summary>
    public static long AllocatedBytes(string file)
    {
        byte* b = stackalloc byte[256];
        if (statx(-100, file, 0x100, 0x7ff, b) != 0) throw new IOException($"statx {file}: errno {Marshal.GetLastPInvokeError()}");
        return (long)*(ulong*)(b + 48) * 512;
    }

    public static string? DeviceOf(string path)
    {
        byte* b = stackalloc byte[256];
        return statx(-100, path, 0x100, 0x7ff, b) != 0 ? null : $"{*(uint*)(b + 136)}:{*(uint*)(b + 140)}";
    }

    public static bool IsMounted(string path) => MountLine(path) is not null;

    public static string MountOptions(string path) => MountLine(path)?[5] ?? throw new InvalidOperationException($"{path} is not mounted");

    private static string[]? MountLine(string path) =>
        File.ReadLines("/proc/self/mountinfo").Select(l => l.Split(' ')).LastOrDefault(f => f[4] == path);

    public static void Unmount(string path)
    {
        while (IsMounted(path)) Run("umount", path);
    }

    public static IReadOnlyList<string> LoopsBackedUnder(string dir) =>
        Directory.EnumerateDirectories("/sys/block", "loop*")
            .Where(b => File.Exists(Path.Combine(b, "loop", "backing_file")))
            .Where(b => ReadOrEmpty(Path.Combine(b, "loop", "backing_file")).StartsWith(dir + "/", StringComparison.Ordinal))
            .Select(b => "/dev/" + Path.GetFileName(b)).ToList();

    private static string ReadOrEmpty(string file)
    {
        try { return File.ReadAllText(file); }
        catch (IOException) { return ""; }
    }

    public static string Run(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var output = p.StandardOutput.ReadToEnd();
        var err = p.StandardError.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0) throw new InvalidOperationException($"{file} {string.Join(' ', args)} exited {p.ExitCode}: {err}");
        return output;
    }
}

internal static unsafe partial class DiskTestHost
{
    public readonly record struct FileStat(uint Mode, uint Uid, uint Gid, ulong Inode, uint Nlink);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int mknod(string path, uint mode, ulong dev);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int lchown(string path, uint uid, uint gid);

    public static FileStat Stat(string path)
    {
        byte* b = stackalloc byte[256];
        if (statx(-100, path, 0x100, 0x7ff, b) != 0) throw new IOException($"statx {path}: errno {Marshal.GetLastPInvokeError()}");
        return new FileStat(*(ushort*)(b + 28), *(uint*)(b + 20), *(uint*)(b + 24), *(ulong*)(b + 32), *(uint*)(b + 16));
    }

    public static void MakeCharDevice(string path, uint major, uint minor)
    {
        if (mknod(path, 0x2000 | 0b110_000_000, ((ulong)major << 8) | minor) != 0) throw new IOException($"mknod {path}: errno {Marshal.GetLastPInvokeError()}");
    }

    public static void MakeFifo(string path)
    {
        if (mknod(path, 0x1000 | 0b110_000_000, 0) != 0) throw new IOException($"mkfifo {path}: errno {Marshal.GetLastPInvokeError()}");
    }

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int link(string oldpath, string newpath);

    public static void Link(string existing, string newPath)
    {
        if (link(existing, newPath) != 0) throw new IOException($"link {newPath}: errno {Marshal.GetLastPInvokeError()}");
    }

    public static void Chown(string path, uint uid, uint gid)
    {
        if (lchown(path, uid, gid) != 0) throw new IOException($"lchown {path}: errno {Marshal.GetLastPInvokeError()}");
    }
}
