using System.Diagnostics;
using BatchRunner.Testing;

namespace BatchRunner.Bench;

/// <summary>
/// A one-layer Debian bookworm image with python3 and python3-numpy (~228 MB unpacked, ~86 MB gzip), built once
/// with debootstrap and umoci and cached as an OCI layout under the bench's cache directory.
/// </summary>
internal static class NumpyImage
{
    public static async Task<string> EnsureLayoutAsync(string cacheDir, string tag)
    {
        var layout = Path.Combine(cacheDir, "layout");
        var done = Path.Combine(cacheDir, "layout.done");
        if (File.Exists(done)) return layout;
        Directory.CreateDirectory(cacheDir);

        // debootstrap leaves a half-made tree when interrupted: only a renamed one is complete.
        var rootfs = Path.Combine(cacheDir, "rootfs");
        if (!Directory.Exists(rootfs))
        {
            if (!File.Exists("/usr/sbin/debootstrap"))
            {
                Console.WriteLine("installing debootstrap");
                await ExternalCommand.RunAsync("apt-get", ["install", "-y", "debootstrap"], timeout: TimeSpan.FromMinutes(5));
            }
            var partial = rootfs + ".partial";
            if (Directory.Exists(partial)) Directory.Delete(partial, recursive: true);
            Console.WriteLine("debootstrap bookworm with python3, python3-numpy (about a minute)");
            var sw = Stopwatch.StartNew();
            await ExternalCommand.RunAsync("debootstrap",
                ["--variant=minbase", "--include=python3,python3-numpy", "bookworm", partial, "http://deb.debian.org/debian"],
                timeout: TimeSpan.FromMinutes(15));
            Console.WriteLine($"debootstrap took {sw.Elapsed.TotalSeconds:0} s");
            Directory.Move(partial, rootfs);
        }
        // Package caches are not part of a runtime image.
        foreach (var dir in new[] { "var/cache/apt/archives", "var/lib/apt/lists" })
        {
            var path = Path.Combine(rootfs, dir);
            if (!Directory.Exists(path)) continue;
            foreach (var f in Directory.EnumerateFiles(path)) File.Delete(f);
            var partialDir = Path.Combine(path, "partial");
            if (Directory.Exists(partialDir)) foreach (var f in Directory.EnumerateFiles(partialDir)) File.Delete(f);
        }
        foreach (var f in Directory.EnumerateFiles(Path.Combine(rootfs, "var/cache/apt"), "*.bin")) File.Delete(f);

        if (Directory.Exists(layout)) Directory.Delete(layout, recursive: true);
        await Umoci("init", "--layout", layout);
        await Umoci("new", "--image", $"{layout}:{tag}");
        // unpack (an empty bundle) + move the tree in + repack makes the one gzip layer. Not `umoci insert`: the
        // layer it writes (umoci 0.4.7) ends without the tar end-of-archive blocks, which BatchRunner's unpacker
        // rejects as truncated (see bench/README.md).
        var bundle = Path.Combine(cacheDir, "bundle");
        if (Directory.Exists(bundle)) Directory.Delete(bundle, recursive: true);
        await Umoci("unpack", "--image", $"{layout}:{tag}", bundle);
        Directory.Delete(Path.Combine(bundle, "rootfs"), recursive: true);
        Directory.Move(rootfs, Path.Combine(bundle, "rootfs"));
        await Umoci("repack", "--image", $"{layout}:{tag}", bundle);
        Directory.Delete(bundle, recursive: true);
        await Umoci("config", "--image", $"{layout}:{tag}", "--config.cmd", "python3",
            "--config.env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        await Umoci("gc", "--layout", layout);
        await File.WriteAllTextAsync(done, DateTime.UtcNow.ToString("O"));
        return layout;

        static Task<string> Umoci(params string[] args) => ExternalCommand.RunAsync("umoci", args, timeout: TimeSpan.FromMinutes(10));
    }

    /// <summary>Directories of the numpy rootfs that each become a layer of their own in <see cref="EnsureLayeredAsync"/>.</summary>
    private static readonly string[] LayerDirs = ["usr/lib/x86_64-linux-gnu", "usr/lib/python3", "usr/share"];

    /// <summary>
    /// The same files as the one-layer image, split into <c>1 + LayerDirs.Length</c> layers (everything else first,
    /// then one layer per directory above), tagged <paramref name="layeredTag"/> in the same layout.
    /// </summary>
    public static async Task<int> EnsureLayeredAsync(string cacheDir, string tag, string layeredTag)
    {
        var layout = await EnsureLayoutAsync(cacheDir, tag);
        var done = Path.Combine(cacheDir, "layered.done");
        if (File.Exists(done)) return 1 + LayerDirs.Length;

        var full = Path.Combine(cacheDir, "layered-full");
        var bundle = Path.Combine(cacheDir, "layered-bundle");
        var aside = Path.Combine(cacheDir, "layered-aside");
        foreach (var d in new[] { full, bundle, aside })
            if (Directory.Exists(d)) Directory.Delete(d, recursive: true);
        Console.WriteLine($"building the {1 + LayerDirs.Length}-layer image (a minute)");
        await Umoci("unpack", "--image", $"{layout}:{tag}", full);
        Directory.CreateDirectory(aside);
        for (var i = 0; i < LayerDirs.Length; i++) Directory.Move(Path.Combine(full, "rootfs", LayerDirs[i]), Path.Combine(aside, i.ToString()));

        await Umoci("new", "--image", $"{layout}:{layeredTag}");
        await Umoci("unpack", "--image", $"{layout}:{layeredTag}", bundle);
        Directory.Delete(Path.Combine(bundle, "rootfs"));
        Directory.Move(Path.Combine(full, "rootfs"), Path.Combine(bundle, "rootfs"));
        await Umoci("repack", "--refresh-bundle", "--image", $"{layout}:{layeredTag}", bundle);
        for (var i = 0; i < LayerDirs.Length; i++)
        {
            // With --refresh-bundle each repack writes what changed since the previous one: just this directory.
            Directory.Move(Path.Combine(aside, i.ToString()), Path.Combine(bundle, "rootfs", LayerDirs[i]));
            await Umoci("repack", "--refresh-bundle", "--image", $"{layout}:{layeredTag}", bundle);
        }
        await Umoci("config", "--image", $"{layout}:{layeredTag}", "--config.cmd", "python3",
            "--config.env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        await Umoci("gc", "--layout", layout);
        foreach (var d in new[] { full, bundle, aside })
            if (Directory.Exists(d)) Directory.Delete(d, recursive: true);
        await File.WriteAllTextAsync(done, DateTime.UtcNow.ToString("O"));
        return 1 + LayerDirs.Length;

        static Task<string> Umoci(params string[] args) => ExternalCommand.RunAsync("umoci", args, timeout: TimeSpan.FromMinutes(10));
    }
}
