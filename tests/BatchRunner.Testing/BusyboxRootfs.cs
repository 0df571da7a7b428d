using System.Diagnostics;

namespace BatchRunner.Testing;

/// <summary>A minimal root file system from the host's static busybox (package busybox-static): no registry needed.</summary>
public static class BusyboxRootfs
{
    public const string HostBusybox = "/bin/busybox";

    /// <summary>
    /// Fills <paramref name="dir"/> with bin/busybox, a symlink per applet (bin/sh, bin/sleep, ...),
    /// etc/passwd and etc/group (root and nobody 65534), and the empty mount points tmp, proc, sys, dev.
    /// Returns the absolute path of the rootfs.
    /// </summary>
    public static string Create(string dir)
    {
        if (!OperatingSystem.IsLinux()) throw new PlatformNotSupportedException("busybox rootfs: Linux only");
        dir = Path.GetFullPath(dir);
        var bin = Path.Combine(dir, "bin");
        Directory.CreateDirectory(bin);
        var busybox = Path.Combine(bin, "busybox");
        File.Copy(HostBusybox, busybox, overwrite: true);
        File.SetUnixFileMode(busybox, (UnixFileMode)0b111_101_101); // 0755
        foreach (var applet in ListApplets())
        {
            if (applet == "busybox") continue; // the list names busybox itself: a link would replace the binary
            var link = Path.Combine(bin, applet);
            if (!File.Exists(link) && new FileInfo(link).LinkTarget is null) File.CreateSymbolicLink(link, "busybox");
        }
        foreach (var d in new[] { "etc", "tmp", "proc", "sys", "dev", "root" }) Directory.CreateDirectory(Path.Combine(dir, d));
        File.SetUnixFileMode(Path.Combine(dir, "tmp"), (UnixFileMode)0b1_111_111_111); // 1777
        File.WriteAllText(Path.Combine(dir, "etc", "passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n");
        File.WriteAllText(Path.Combine(dir, "etc", "group"), "root:x:0:\nnogroup:x:65534:\n");
        return dir;
    }

    private static IEnumerable<string> ListApplets()
    {
        var psi = new ProcessStartInfo(HostBusybox, "--list") { RedirectStandardOutput = true, UseShellExecute = false };
        using var p = Process.Start(psi)!;
        var output = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0) throw new InvalidOperationException($"{HostBusybox} --list failed with exit code {p.ExitCode}");
        return output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
    }
}
