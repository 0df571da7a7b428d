using System.Diagnostics;
using System.Globalization;
using BatchRunner.Native;

namespace BatchRunner.Runtime.Tests.Disk;

/// <summary>How the tests look at volumes from outside: mountinfo, sysfs, stat(1), umount(8), losetup(8).</summary>
internal static class DiskTestHost
{
    /// <summary>Bytes the host's filesystem has allocated to <paramref name="file"/> (st_blocks × 512).</summary>
    public static long AllocatedBytes(string file) =>
        long.Parse(Run("stat", "-c", "%b", file).Trim(), CultureInfo.InvariantCulture) * 512;

    public static string? DeviceOf(string path) => Libc.TryStat(Libc.AT_FDCWD, path, out var st) ? $"{st.DevMajor}:{st.DevMinor}" : null;

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

    public static Libc.FileStatus Stat(string path) =>
        Libc.TryStat(Libc.AT_FDCWD, path, out var st) ? st : throw new IOException($"statx {path}: errno {Libc.Errno}");

    public static void MakeCharDevice(string path, uint major, uint minor) =>
        Check(Libc.mknodat(Libc.AT_FDCWD, path, Libc.S_IFCHR | 0b110_000_000, Libc.MakeDev(major, minor)), "mknod", path);

    public static void MakeFifo(string path) => Check(Libc.mknodat(Libc.AT_FDCWD, path, Libc.S_IFIFO | 0b110_000_000, 0), "mkfifo", path);

    public static void Link(string existing, string newPath) => Check(Libc.linkat(Libc.AT_FDCWD, existing, Libc.AT_FDCWD, newPath, 0), "link", newPath);

    public static void Chown(string path, uint uid, uint gid) =>
        Check(Libc.fchownat(Libc.AT_FDCWD, path, uid, gid, Libc.AT_SYMLINK_NOFOLLOW), "lchown", path);

    private static void Check(int rc, string what, string path)
    {
        if (rc != 0) throw new IOException($"{what} {path}: {Libc.Describe(Libc.Errno)}");
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
