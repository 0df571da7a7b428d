using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using static BatchRunner.Native.Libc;

namespace BatchRunner.Runtime.Disk;

public sealed class LoopDiskOptions
{
    /// <summary>mkfs.ext4 (e2fsprogs); a bare name is looked up in PATH, then /usr/sbin and /sbin.</summary>
    public string MkfsPath { get; init; } = "mkfs.ext4";
    /// <summary>Space past the limit before writes fail; see <see cref="DiskImageSizing"/>.</summary>
    public long HeadroomBytes { get; init; } = DiskImageSizing.DefaultHeadroomBytes;
    /// <summary>Empty directories (names, not paths: 0755, root's) every new filesystem holds from the start, beside
    /// lost+found: made by mkfs.ext4 (<c>-d</c>), so part of the empty image every later one is a copy of, instead of a
    /// <c>mkdir</c> on each job's fresh filesystem, where each allocates its inode and block.</summary>
    public IReadOnlyList<string> Directories { get; init; } = [];
}

/// <summary>
/// Size-limited filesystems as sparse ext4 images on loop devices: plain ext4 with no mount options asked of the
/// operator, enforced by the kernel (ENOSPC), nothing between the job's writes and the disk but a loop device doing
/// direct I/O. A volume is DIR/disk.img mounted at DIR/disk; see <see cref="DiskImageSizing"/> for how big.
/// </summary>
/// <remarks>
/// Guarantees: a failed <see cref="CreateAsync"/> leaves nothing (no mount, no bound loop device, no image). After a
/// crash, a volume is a mount under the caller's directory (the loop device goes when it is unmounted) and an image
/// file; <see cref="RemoveLeftovers"/> unbinds any loop device still bound to an image there.
/// </remarks>
public sealed partial class LoopDiskVolumes(LoopDiskOptions? options = null, ILogger<LoopDiskVolumes>? logger = null) : IDiskVolumes
{
    public const string ImageFileName = "disk.img";
    public const string MountDirName = "disk";
    private static readonly TimeSpan MkfsTimeout = TimeSpan.FromSeconds(60);

    /// <summary>The mode of the directories a new filesystem holds (<see cref="LoopDiskOptions.Directories"/>): 0755.</summary>
    internal const UnixFileMode DirectoryMode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute |
        UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute;

    private readonly LoopDiskOptions _options = options ?? new LoopDiskOptions();
    private readonly ILogger _logger = logger ?? (ILogger)NullLogger.Instance;
    private string? _mkfs;

    /// <summary>The directories every new filesystem holds (<see cref="LoopDiskOptions.Directories"/>).</summary>
    internal IReadOnlyList<string> Directories => _options.Directories;
    /// <summary>The empty images mkfs.ext4 made, by size: the next one of a size is a copy (<see cref="EmptyImageTemplates"/>).</summary>
    private readonly EmptyImageTemplates _templates = new();

    public async Task<IDiskVolume> CreateAsync(string dir, long limitBytes, CancellationToken ct)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(limitBytes);
        dir = System.IO.Path.GetFullPath(dir);
        var made = false;
        if (!Directory.Exists(dir))
        {
            var parent = System.IO.Path.GetDirectoryName(dir);
            if (parent is null || !Directory.Exists(parent)) throw new DirectoryNotFoundException($"disk volume directory {parent} does not exist");
            Directory.CreateDirectory(dir);
            made = true;
        }
        var started = Stopwatch.GetTimestamp();
        try
        {
            await FormatImageAsync(dir, limitBytes, ct);
            return Mount(dir, limitBytes, started);
        }
        catch when (made)
        {
            try { Directory.Delete(dir); } catch (IOException) { }
            throw;
        }
    }

    /// <summary>
    /// Makes the empty filesystem of a volume of <paramref name="limitBytes"/> as <c>DIR/disk.img</c> (a sparse file and
    /// mkfs.ext4 the first time for a size, a copy of that first one's data after), without mounting it: what
    /// <see cref="PooledDiskVolumes"/> makes ahead. On failure nothing is left.
    /// </summary>
    public async Task FormatImageAsync(string dir, long limitBytes, CancellationToken ct)
    {
        var image = System.IO.Path.Combine(dir, ImageFileName);
        try
        {
            // Sparse: the host's blocks are taken only as the job writes. 0600: the image is the job's raw data.
            var imageBytes = DiskImageSizing.ImageBytes(limitBytes, _options.HeadroomBytes);
            using (var file = new FileStream(image, new FileStreamOptions
                   { Mode = FileMode.CreateNew, Access = FileAccess.Write, UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite }))
            {
                if (_templates.TryGet(imageBytes, out var template))
                {
                    template.WriteTo(file.SafeFileHandle);
                    // To the disk now, as mkfs.ext4 does before it exits: attaching a loop device for direct I/O writes back
                    // what the file still has in the page cache, which would then be on the path of the job taking a pooled disk.
                    file.Flush(flushToDisk: true);
                    return;
                }
                file.SetLength(imageBytes);
            }
            await MakeFilesystemAsync(image, ct);
            _templates.Capture(image);
        }
        catch
        {
            TryDelete(image);
            throw;
        }
    }

    /// <summary>
    /// Makes the image a released volume left in <paramref name="dir"/> (<see cref="LoopDiskVolume.ReleaseKeepingImageAsync"/>)
    /// an empty filesystem of <paramref name="limitBytes"/> again, in place: every block of it outside the empty
    /// filesystem's data freed (a hole reads as zeros), and that data written over the rest
    /// (<see cref="EmptyImageTemplates.Template.RewriteOver"/>). Nothing of the last job's data is left in the file, byte
    /// for byte the image a new file would be; the file's inode is kept,
    /// so the data disk frees and makes no inode per job (on an ext4 without a journal each new inode is a scan past
    /// every inode freed in the last 60 s).
    /// </summary>
    /// <remarks>
    /// Only once <paramref name="loopName"/>, the loop device the image was bound to, no longer is
    /// (<see cref="LoopDevice.IsBoundTo"/>): the unmount may not have been the filesystem's last (a container's mount
    /// namespace still going away holds it), and until the last, the old filesystem writes to the image (its superblock,
    /// its inode tables) over the new one. Waiting up to <paramref name="wait"/> for that; after it, or when the image
    /// is not as expected, the image is deleted (a bound device keeps its inode alive, unseen) and a new one made.
    /// </remarks>
    public async Task ReformatImageAsync(string dir, long limitBytes, string loopName, TimeSpan wait, CancellationToken ct)
    {
        var image = System.IO.Path.Combine(dir, ImageFileName);
        var imageBytes = DiskImageSizing.ImageBytes(limitBytes, _options.HeadroomBytes);
        var started = Stopwatch.GetTimestamp();
        while (LoopDevice.IsBoundTo(loopName, image))
        {
            if (Stopwatch.GetElapsedTime(started) >= wait)
            {
                LogStillBound(_logger, image, loopName, wait.TotalMilliseconds);
                await MakeNewAsync();
                return;
            }
            await Task.Delay(10, ct);
        }
        if (!_templates.TryGet(imageBytes, out var template))
        {
            await MakeNewAsync();
            return;
        }
        try
        {
            using var file = new FileStream(image, new FileStreamOptions { Mode = FileMode.Open, Access = FileAccess.ReadWrite });
            template.RewriteOver(file.SafeFileHandle);
            // As FormatImageAsync: to the disk now, not on the path of the job that mounts it.
            file.Flush(flushToDisk: true);
        }
        catch (IOException e)
        {
            LogReformatFailed(_logger, image, e.Message);
            await MakeNewAsync();
        }

        async Task MakeNewAsync()
        {
            TryDelete(image);
            await FormatImageAsync(dir, limitBytes, ct);
        }
    }

    /// <summary>
    /// Mounts the image <see cref="FormatImageAsync"/> made in <paramref name="dir"/> (for the same
    /// <paramref name="limitBytes"/>) at <c>DIR/disk</c>: the volume, its one owner from here on. On failure the image is
    /// deleted and nothing else is left.
    /// </summary>
    public IDiskVolume MountImage(string dir, long limitBytes) => Mount(System.IO.Path.GetFullPath(dir), limitBytes, Stopwatch.GetTimestamp());

    private LoopDiskVolume Mount(string dir, long limitBytes, long started)
    {
        var image = System.IO.Path.Combine(dir, ImageFileName);
        var mountPoint = System.IO.Path.Combine(dir, MountDirName);
        var writable = DiskImageSizing.WritableBytes(limitBytes, _options.HeadroomBytes);
        LoopDevice? loop = null;
        var mounted = false;
        try
        {
            loop = LoopDevice.Attach(image);
            Directory.CreateDirectory(mountPoint);
            // nosuid, nodev: whatever a job leaves here is never a setuid program or a device on the host.
            // noinit_itable: mkfs marked the inode tables zeroed (a sparse file reads as zeros); nothing to write later.
            if (mount(loop.DevicePath, mountPoint, "ext4", MS_NOSUID | MS_NODEV | MS_NOATIME, "noinit_itable") != 0)
                throw new IOException($"mounting {loop.DevicePath} ({image}) at {mountPoint} failed: {Describe(Errno)}");
            mounted = true;
            // From here the mount is the device's only user: unmounting it unbinds the device (autoclear).
            loop.Dispose();
            var baseline = HoldBackBeyond(loop.Name, mountPoint, writable);
            NoBitmapPrefetch(loop.Name);
            LogCreated(_logger, mountPoint, loop.DevicePath, limitBytes, new FileInfo(image).Length, Stopwatch.GetElapsedTime(started).TotalMilliseconds);
            return new LoopDiskVolume(mountPoint, image, loop.Name, DiskImageSizing.RoundUpToBlock(limitBytes), baseline, _logger);
        }
        catch
        {
            loop?.Dispose();
            if (mounted) LoopDiskVolume.UnmountNow(mountPoint);
            TryDelete(image);
            if (Directory.Exists(mountPoint) && !LoopDiskVolume.IsMounted(mountPoint)) Directory.Delete(mountPoint);
            throw;
        }
    }

    /// <summary>
    /// Unbinds loop devices still bound to images under <paramref name="dir"/> that are not mounted (a worker killed
    /// between binding and mounting). Call after unmounting everything under <paramref name="dir"/>; a device whose
    /// mount is gone unbinds itself. Returns the devices unbound.
    /// </summary>
    public static IReadOnlyList<string> RemoveLeftovers(string dir) => LoopDevice.DetachAllBackedUnder(dir);

    private async Task MakeFilesystemAsync(string image, CancellationToken ct)
    {
        _mkfs ??= ResolveMkfs(_options.MkfsPath);
        // -b/-i/-I fixed so that DiskImageSizing's overhead holds whatever /etc/mke2fs.conf says; no root reserve, no
        // online-resize reserve. mke2fs discards (punches) the sparse file first, which lets it mark the inode tables
        // zeroed instead of writing them, and leave the journal's blocks unwritten (lazy_journal_init).
        // The smallest journal (4 MiB, DiskImageSizing.JournalBytes), not for crashes (the image is thrown away after
        // one) but for reuse: without a journal ext4 will not give a new file an inode freed in the last 60 s (300 more
        // while its inode table block is dirty) and scans past each of them at every file it creates, so a filesystem
        // emptied and used again while mounted (PooledDiskVolumes) got slower with every job: a create-and-delete of 20
        // files went 0.59 -> 0.87 ms in 6 s on this VM, and stayed at 0.69 ms with the journal (2026-12-01).
        List<string> args = ["-q", "-F", "-t", "ext4", "-b", "4096", "-i", "16384", "-I", "256", "-m", "0",
            "-O", "^resize_inode", "-J", "size=4", "-E", "root_owner=0:0,lazy_journal_init=1"];
        // -d copies a directory's tree into the new filesystem (its root keeps root_owner's owner and mode 0755).
        var tree = _options.Directories.Count > 0 ? Directory.CreateTempSubdirectory("batchrunner-mkfs-") : null;
        try
        {
            if (tree is not null)
            {
                foreach (var name in _options.Directories)
                {
                    if (name.Length == 0 || name is "." or ".." || name.Contains('/') || name == "lost+found")
                        throw new ArgumentException($"\"{name}\" is not a directory name a new filesystem can hold", nameof(LoopDiskOptions.Directories));
                    Directory.CreateDirectory(System.IO.Path.Combine(tree.FullName, name), DirectoryMode);
                }
                args.AddRange(["-d", tree.FullName]);
            }
            args.Add(image);
            var result = await Command.RunAsync(_mkfs, args, MkfsTimeout, ct);
            if (!result.Ok) throw new IOException($"{_mkfs} {image} failed (exit {result.ExitCode}): {result.Message}");
        }
        finally
        {
            try { tree?.Delete(recursive: true); } catch (IOException) { }
        }
    }

    /// <summary>
    /// Stops the block allocator reading other groups' bitmaps ahead (<c>mb_prefetch</c> 0; kernels since 5.9). On a
    /// fresh filesystem its first allocations (they were the job's rootfs, upper, work, outputs directories, which a new
    /// image now holds: <see cref="LoopDiskOptions.Directories"/>; now the job's first files) otherwise read up to 8
    /// groups' bitmaps through the loop device each: the five directories took 0.85–0.9 ms of CPU and 1.3–1.45 ms (medians
    /// of 15, 10 GiB images made as here), 0.23–0.37 and 0.5–0.7 ms without. A later large write reads each bitmap
    /// when it reaches that group (4 KiB each), which its own writes dwarf. Best effort: without the knob nothing changes.
    /// </summary>
    private static void NoBitmapPrefetch(string device)
    {
        try { File.WriteAllText($"/sys/fs/ext4/{device}/mb_prefetch", "0"); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
    }

    /// <summary>Holds back every block beyond <paramref name="writableBytes"/> from writers, on top of what the kernel
    /// reserves already. Returns the bytes in use on the empty filesystem (what usage is counted from).</summary>
    private static long HoldBackBeyond(string device, string mountPoint, long writableBytes)
    {
        var sysfs = $"/sys/fs/ext4/{device}/reserved_clusters";
        if (!TryStatVfs(mountPoint, out var fs)) throw new IOException($"statvfs {mountPoint} failed: {Describe(Errno)}");
        var kernelReserve = long.Parse(File.ReadAllText(sysfs).Trim(), System.Globalization.CultureInfo.InvariantCulture);
        var writableBlocks = writableBytes / fs.BlockSize;
        var holdBack = fs.FreeBlocks - writableBlocks;
        if (holdBack < kernelReserve)
            throw new IOException($"disk image at {mountPoint} has {fs.FreeBlocks} free blocks, fewer than the {writableBlocks} asked " +
                $"plus the {kernelReserve} ext4 keeps for metadata (DiskImageSizing is too tight for this mke2fs)");
        File.WriteAllText(sysfs, holdBack.ToString(System.Globalization.CultureInfo.InvariantCulture));
        if (!TryStatVfs(mountPoint, out fs) || fs.AvailableBytes != writableBlocks * fs.BlockSize)
            throw new IOException($"disk image at {mountPoint}: {fs.AvailableBytes} bytes available after holding back {holdBack} blocks, expected {writableBlocks * fs.BlockSize}");
        return fs.UsedBytes;
    }

    private static string ResolveMkfs(string configured)
    {
        if (configured.Contains('/')) return File.Exists(configured) ? configured : throw new IOException($"{configured} does not exist");
        var dirs = (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries).Concat(["/usr/sbin", "/sbin"]);
        return dirs.Select(d => System.IO.Path.Combine(d, configured)).FirstOrDefault(File.Exists)
            ?? throw new IOException($"{configured} not found in PATH, /usr/sbin or /sbin: per-job disk limits need e2fsprogs");
    }

    private static void TryDelete(string file)
    {
        try { File.Delete(file); }
        catch (IOException) { }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Disk image {Image}: its loop device {Loop} was still bound to it after {Milliseconds:0} ms (its filesystem still in use somewhere); a new image is made instead")]
    private static partial void LogStillBound(ILogger logger, string image, string loop, double milliseconds);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Disk image {Image} could not be emptied in place ({Error}); a new image is made instead")]
    private static partial void LogReformatFailed(ILogger logger, string image, string error);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Disk volume {MountPoint} on {Device}: limit {LimitBytes} bytes, image {ImageBytes} bytes, made in {Milliseconds:0.0} ms")]
    private static partial void LogCreated(ILogger logger, string mountPoint, string device, long limitBytes, long imageBytes, double milliseconds);
}
