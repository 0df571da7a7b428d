using static BatchRunner.Native.Libc;

namespace BatchRunner.Runtime.Disk;

/// <summary>
/// A loop device bound to an image file, with LO_FLAGS_AUTOCLEAR: the kernel unbinds it by itself once its last
/// user closes it. Whoever attaches mounts the device and then disposes this handle; from then on the mount is the
/// device's only user, so unmounting it frees the device, and a process killed at any point leaves no bound device
/// behind except under a mount (which the node janitor unmounts).
/// </summary>
internal sealed class LoopDevice : IDisposable
{
    private const string ControlPath = "/dev/loop-control";
    private int _fd;

    private LoopDevice(int number, int fd)
    {
        Number = number;
        _fd = fd;
    }

    public int Number { get; }
    public string DevicePath => DevicePathOf(Number);
    /// <summary>"loop7": the name of its block device, and of its directory under /sys/fs/ext4 once mounted.</summary>
    public string Name => $"loop{Number}";

    private static string DevicePathOf(int number) => $"/dev/loop{number}";

    /// <summary>Binds a free loop device to <paramref name="imagePath"/> (direct I/O on the backing file, so its pages are
    /// not cached twice: once above the loop device and once below).</summary>
    /// <exception cref="IOException">No loop device could be bound; the message says why (no loop support, no device
    /// node in /dev, a kernel older than 5.8).</exception>
    public static LoopDevice Attach(string imagePath)
    {
        var control = open(ControlPath, O_RDWR | O_CLOEXEC);
        if (control < 0)
            throw new IOException($"cannot open {ControlPath}: {Describe(Errno)}; per-job disk limits need loop devices (modprobe loop)");
        var image = open(imagePath, O_RDWR | O_CLOEXEC);
        if (image < 0)
        {
            var errno = Errno;
            close(control);
            throw new IOException($"cannot open disk image {imagePath}: {Describe(errno)}");
        }
        try
        {
            // Another process (losetup, another worker) may take the device between GET_FREE and CONFIGURE: try again.
            for (var attempt = 0; attempt < 32; attempt++)
            {
                var number = GetFreeLoop(control);
                if (number < 0) throw new IOException($"no free loop device: {Describe(Errno)}");
                var fd = open(DevicePathOf(number), O_RDWR | O_CLOEXEC);
                if (fd < 0)
                {
                    var errno = Errno;
                    throw new IOException($"cannot open {DevicePathOf(number)}: {Describe(errno)}" +
                        (errno == ENOENT ? "; /dev has no node for it (is /dev a devtmpfs?)" : ""));
                }
                if (ConfigureLoop(fd, image, LO_FLAGS_AUTOCLEAR | LO_FLAGS_DIRECT_IO, imagePath) == 0) return new LoopDevice(number, fd);
                var failed = Errno;
                close(fd);
                if (failed == EBUSY) continue;
                throw new IOException($"cannot bind {DevicePathOf(number)} to {imagePath}: {Describe(failed)}" +
                    (failed == EINVAL ? " (LOOP_CONFIGURE needs Linux 5.8 or newer)" : ""));
            }
            throw new IOException($"cannot bind a loop device to {imagePath}: every free device was taken by someone else first");
        }
        finally
        {
            // The device holds its own reference to the image once bound.
            close(image);
            close(control);
        }
    }

    /// <summary>Closes this process's handle. Once nothing else (a mount) uses the device, the kernel unbinds it.</summary>
    public void Dispose()
    {
        var fd = Interlocked.Exchange(ref _fd, -1);
        if (fd >= 0) close(fd);
    }

    /// <summary>
    /// Whether loop device <paramref name="name"/> ("loop7") is still bound to the file that is <paramref name="imagePath"/>
    /// now, told by the file's device and inode (a path can read differently: renamed since, or reached through another
    /// mount). False once it is unbound or bound to another file; true when that cannot be read (assume the worst).
    /// </summary>
    /// <remarks>A device bound to an image stays bound while any filesystem on it lives: after the unmount of its last
    /// mount, which may be in a container's mount namespace that is still going away. Only then does no one write the
    /// image but its owner.</remarks>
    public static bool IsBoundTo(string name, string imagePath)
    {
        if (!TryStat(AT_FDCWD, imagePath, out var image, followTrailingSymlink: true)) return true;
        var fd = open("/dev/" + name, O_RDONLY | O_CLOEXEC);
        if (fd < 0) return Errno is not (ENOENT or ENXIO);
        try
        {
            if (LoopBacking(fd, out var device, out var inode) != 0) return Errno != ENXIO;
            return inode == image.Inode && device == EncodeDevice(image.DevMajor, image.DevMinor);
        }
        finally { close(fd); }
    }

    /// <summary>Bound loop devices whose backing file lies under <paramref name="dir"/>, from /sys/block/loop*/loop/backing_file.</summary>
    public static IReadOnlyList<(int Number, string BackingFile)> BackedUnder(string dir)
    {
        var prefix = Path.GetFullPath(dir).TrimEnd('/') + "/";
        var result = new List<(int, string)>();
        if (!Directory.Exists("/sys/block")) return result;
        foreach (var block in Directory.EnumerateDirectories("/sys/block", "loop*"))
        {
            if (!int.TryParse(Path.GetFileName(block)["loop".Length..], out var number)) continue;
            string backing;
            try { backing = File.ReadAllText(Path.Combine(block, "loop", "backing_file")).TrimEnd('\n'); }
            catch (IOException) { continue; } // not bound (no loop/ directory), or unbound meanwhile
            const string deleted = " (deleted)";
            if (backing.EndsWith(deleted, StringComparison.Ordinal)) backing = backing[..^deleted.Length];
            if (backing.StartsWith(prefix, StringComparison.Ordinal)) result.Add((number, backing));
        }
        return result;
    }

    /// <summary>
    /// Unbinds every loop device backed by a file under <paramref name="dir"/> (what a crashed worker left bound but not
    /// mounted). A device still in use (mounted elsewhere) gets LO_FLAGS_AUTOCLEAR instead, so that it goes once unused.
    /// </summary>
    /// <returns>The devices unbound or marked.</returns>
    public static IReadOnlyList<string> DetachAllBackedUnder(string dir)
    {
        var done = new List<string>();
        foreach (var (number, _) in BackedUnder(dir))
        {
            var fd = open(DevicePathOf(number), O_RDWR | O_CLOEXEC);
            if (fd < 0) continue;
            try
            {
                if (ClearLoop(fd) == 0 || (Errno == EBUSY && SetLoopAutoclear(fd) == 0)) done.Add(DevicePathOf(number));
            }
            finally { close(fd); }
        }
        return done;
    }
}
