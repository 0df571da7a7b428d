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

    async Task<IRootfs> ISnapshotter.MountAsync(IReadOnlyList<string> lowerDirs, string workDir, CancellationToken ct) =>
        await MountAsync(lowerDirs, workDir, ct);

    /// <inheritdoc cref="ISnapshotter.MountAsync"/>
    public Task<RootfsMount> MountAsync(IReadOnlyList<string> lowerDirs, string workDir, CancellationToken ct)
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
            if (mount("overlay", rootfs, "overlay", 0, options) != 0)
            {
                var errno = Errno;
                throw new IOException($"mounting overlay at {rootfs} failed: {ErrorText(errno)} (errno {errno}); options: {options}");
            }
        }
        catch
        {
            foreach (var dir in created) TryDelete(dir);
            throw;
        }
        LogMounted(_logger, rootfs, lowerDirs.Count);
        return Task.FromResult(new RootfsMount(rootfs, workDir, _logger));
    }

    private static void TryDelete(string dir)
    {
        try { Directory.Delete(dir, recursive: true); }
        catch (IOException) { }
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "Mounted overlay root filesystem {Rootfs} over {LayerCount} layers")]
    private static partial void LogMounted(ILogger logger, string rootfs, int layerCount);
}
