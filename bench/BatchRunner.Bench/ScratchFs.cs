using BatchRunner.Testing;

namespace BatchRunner.Bench;

/// <summary>
/// A fresh journalled ext4 filesystem in a sparse file on a loop device, mounted for the pull measurements, and
/// removed (unmounted, loop device detached, image deleted) when disposed.
/// </summary>
/// <remarks>
/// Why not the host's own filesystem: this machine's root is ext4 <em>without a journal</em>, and there the kernel
/// skips every inode freed in the last minute when it allocates a new one (<c>find_inode_bit</c> →
/// <c>recently_deleted</c>, seen with perf). After a bench round deletes a 10,000-file tree, creating a file costs
/// 0.7–2 ms instead of 40 µs, for whichever contender runs next, and other engineers' deletions do the same: the
/// figures then measure that, not the unpackers. A new filesystem per run, journalled like a production host's,
/// gives every contender the same clean allocator. <c>--direct-io</c> keeps the loop device from caching the image
/// file's pages a second time.
/// </remarks>
internal sealed class ScratchFs : IAsyncDisposable
{
    private readonly string _image;
    private readonly string _loop;

    private ScratchFs(string image, string loop, string mountPoint)
    {
        _image = image;
        _loop = loop;
        MountPoint = mountPoint;
    }

    public string MountPoint { get; }

    public static async Task<ScratchFs> CreateAsync(string parent, long sizeBytes)
    {
        Directory.CreateDirectory(parent);
        var image = Path.Combine(parent, "scratch.img");
        var mountPoint = Path.Combine(parent, "scratch");
        // A previous run killed before its clean-up: unmount and detach what it left.
        await TryRunAsync("umount", mountPoint);
        foreach (var line in (await TryRunAsync("losetup", "-j", image)).Split('\n', StringSplitOptions.RemoveEmptyEntries))
            await TryRunAsync("losetup", "-d", line.Split(':')[0]);
        File.Delete(image);
        Directory.CreateDirectory(mountPoint);
        await using (var f = new FileStream(image, FileMode.CreateNew)) f.SetLength(sizeBytes);
        string? loop = null;
        try
        {
            await ExternalCommand.RunAsync("mkfs.ext4", ["-q", "-F", image]);
            loop = (await ExternalCommand.RunAsync("losetup", ["--direct-io=on", "-f", "--show", image])).Trim();
            await ExternalCommand.RunAsync("mount", [loop, mountPoint]);
            return new ScratchFs(image, loop, mountPoint);
        }
        catch
        {
            if (loop is not null) await TryRunAsync("losetup", "-d", loop);
            File.Delete(image);
            throw;
        }
    }

    public async ValueTask DisposeAsync()
    {
        await TryRunAsync("umount", MountPoint);
        await TryRunAsync("losetup", "-d", _loop);
        File.Delete(_image);
    }

    private static async Task<string> TryRunAsync(string file, params string[] args)
    {
        try { return await ExternalCommand.RunAsync(file, args); }
        catch (Exception e) when (e is InvalidOperationException or System.ComponentModel.Win32Exception) { return ""; }
    }
}
