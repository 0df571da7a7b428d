using System.Text;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using static BatchRunner.Native.Libc;

namespace BatchRunner.Oci.Snapshots;

/// <summary>
/// Stacks unpacked layer directories with overlayfs: the layers are shared read-only lower directories, each
/// mount gets its own upper (the container's writes and deletions) and work directory.
/// </summary>
public sealed partial class OverlaySnapshotter(ILogger<OverlaySnapshotter>? logger = null) : ISnapshotter
{
    public const string RootfsDirName = "rootfs";
    public const string UpperDirName = "upper";
    public const string WorkDirName = "work";

    private readonly ILogger _logger = logger ?? (ILogger)NullLogger.Instance;

    /// <summary>Whether the kernel took the overlay option "volatile" (Linux 5.10); cleared by the first mount it refuses.</summary>
    private static volatile bool s_volatileSupported = true;

    async Task<IRootfs> ISnapshotter.MountAsync(IReadOnlyList<string> lowerDirs, string workDir, bool scratchDiscarded, CancellationToken ct) =>
        await MountAsync(lowerDirs, workDir, scratchDiscarded, ct);

    /// <inheritdoc cref="ISnapshotter.MountAsync"/>
    public Task<RootfsMount> MountAsync(IReadOnlyList<string> lowerDirs, string workDir, CancellationToken ct) =>
        MountAsync(lowerDirs, workDir, scratchDiscarded: false, ct);

    /// <inheritdoc cref="ISnapshotter.MountAsync"/>
    /// <remarks>A discarded scratch is mounted "volatile" where the kernel has it: the overlay then never syncs its upper
    /// directory (not on the container's fsync, nor on unmount, which otherwise writes back the job's disk that is about to
    /// be emptied). A job's /outputs is a bind mount of its disk, not part of the overlay: its fsync still syncs.</remarks>
    public Task<RootfsMount> MountAsync(IReadOnlyList<string> lowerDirs, string workDir, bool scratchDiscarded, CancellationToken ct)
    {
        ct.ThrowIfCancellationRequested();
        ArgumentNullException.ThrowIfNull(lowerDirs);
        if (lowerDirs.Count == 0) throw new ArgumentException("an overlay needs at least one layer directory", nameof(lowerDirs));
        workDir = Path.GetFullPath(workDir);
        foreach (var dir in lowerDirs.Append(workDir))
        {
            if (!Path.IsPathRooted(dir)) throw new ArgumentException($"layer directory {dir} must be an absolute path", nameof(lowerDirs));
            // ',' separates mount options and ':' lower directories; escaping them is not worth the kernel-version quirks.
            if (dir.IndexOfAny([':', ',', '\\', '\n']) >= 0)
                throw new ArgumentException($"directory {dir} contains ':', ',' or '\\', which overlayfs mount options cannot carry");
        }
        foreach (var dir in lowerDirs)
            if (!Directory.Exists(dir)) throw new DirectoryNotFoundException($"layer directory {dir} does not exist");

        var rootfs = Path.Combine(workDir, RootfsDirName);
        var upper = Path.Combine(workDir, UpperDirName);
        var work = Path.Combine(workDir, WorkDirName);
        // overlayfs takes lower directories top-most first; callers (and PreparedImage) list them bottom first.
        var options = $"lowerdir={string.Join(':', lowerDirs.Reverse())},upperdir={upper},workdir={work}";
        var optionBytes = Encoding.UTF8.GetByteCount(options);
        if (optionBytes >= Environment.SystemPageSize)
            throw new IOException(
                $"overlay mount options for {lowerDirs.Count} layers are {optionBytes} bytes, over the kernel's limit of " +
                $"{Environment.SystemPageSize - 1}; use a shorter image store path or an image with fewer layers");

        Directory.CreateDirectory(workDir);
        var created = new List<string>();
        try
        {
            foreach (var dir in new[] { rootfs, upper, work })
            {
                if (Directory.Exists(dir) && Directory.EnumerateFileSystemEntries(dir).Any())
                    throw new IOException($"cannot mount a root filesystem in {workDir}: {dir} is not empty");
                Directory.CreateDirectory(dir);
                created.Add(dir);
            }
            // The upper directory's attributes become those of the container's "/".
            if (fchmodat(AT_FDCWD, upper, 0x1ED /* 0755 */, 0) != 0) throw new IOException($"chmod {upper} failed: {ErrorText(Errno)}");
            var tryVolatile = scratchDiscarded && s_volatileSupported;
            if (!tryVolatile || mount("overlay", rootfs, "overlay", 0, options + ",volatile") != 0)
            {
                if (mount("overlay", rootfs, "overlay", 0, options) != 0)
                {
                    var errno = Errno;
                    throw new IOException($"mounting overlay at {rootfs} failed: {ErrorText(errno)} (errno {errno}); options: {options}");
                }
                // Refused with "volatile" and taken without: a kernel before 5.10. Plain mounts from then on.
                if (tryVolatile) s_volatileSupported = false;
            }
        }
        catch
        {
            foreach (var dir in created) TryDelete(dir);
            throw;
        }
        LogMounted(_logger, rootfs, lowerDirs.Count);
        return Task.FromResult(new RootfsMount(rootfs, workDir, _logger) { KeepsDirectories = scratchDiscarded });
    }

    private static void TryDelete(string dir)
    {
        try { Directory.Delete(dir, recursive: true); }
        catch (IOException) { }
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "Mounted overlay root filesystem {Rootfs} over {LayerCount} layers")]
    private static partial void LogMounted(ILogger logger, string rootfs, int layerCount);
}
