using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace BatchRunner.Runtime.Disk;

/// <summary>
/// Keeps up to <c>size</c> job disks of the node's default limit formatted ahead (the sparse image and its empty ext4:
/// <see cref="LoopDiskVolumes.FormatImageAsync"/>), so that a job asking for that limit only has a directory renamed into place and its image
/// mounted there; any other limit, or an empty pool, is made on demand as before. Each image is made by the same maker
/// for the same limit and mounted by it as an on-demand one is, so it holds back exactly what an on-demand one would, and
/// the job's disk is where it always is: <c>DIR/disk.img</c> mounted at <c>DIR/disk</c>.
/// </summary>
/// <remarks>
/// <para>A disk's directory is recycled, image and all: when its job's disk is released cleanly, the directory with its
/// empty mount point and the used image comes back to the pool, which empties the image in place
/// (<see cref="LoopDiskVolumes.ReformatImageAsync"/>: every block outside the empty filesystem's data freed, that data
/// written over the rest; the job's data goes then) once the loop device it was bound to has let go of it, or makes a new image when that takes longer
/// than <see cref="ReuseWait"/>. A disk of the default limit made on demand, the pool being empty, is made in a spare
/// directory when there is one, and comes back the same way. So a job of the default limit makes and deletes no file
/// of the data disk's for its disk: on ext4 without a journal each new inode costs a scan past every inode of its group
/// deleted in the last 60 s (<c>recently_deleted</c>), which at 30 jobs/s was about a sixth of the worker's CPU.
/// (Formatting a used image again without that wait gave filesystems that would not mount, or failed their checksums,
/// under load: the old filesystem, still alive in a container's mount namespace going away, wrote over the new one.)</para>
/// <para>Kept mounted (<see cref="KeepMounted"/>, what the server does): a disk its job hands back is not unmounted at all when
/// it can be emptied in place. Once the job's phases have let go of it (no mount left on it: the root filesystem's
/// overlay is gone; at most <see cref="MaxInodesToEmpty"/> files and <see cref="MaxBytesToEmpty"/> left), its directory
/// is renamed to the pool's and, off the job's path, every file the job left is deleted (never following a link): the
/// disk's top directories (<see cref="LoopDiskOptions.Directories"/>) are emptied, and those a job reaches itself
/// (<see cref="KeepMounted.RenewedDirectories"/>: its /outputs, and the overlay's upper directory, which is its root
/// directory) are made again, new, root's and 0755, without whatever mode, owner, attributes or flags the job gave them;
/// it is handed out again only once its blocks and inodes in use are exactly those of the empty filesystem it was
/// mounted as, and, when its job left more than <see cref="TrimAboveBytes"/>, once the freed blocks were given back to the
/// host (a journal commit and FITRIM). Anything else (a mount left, more to delete, an error, still not back to empty after
/// <see cref="ReuseWait"/>: a container's mount namespace going away may hold the old directories a moment) and the disk
/// goes the way above: unmounted, its image emptied. So the ext4 mount and unmount, the loop device's set-up and teardown
/// and the image's rewrite are off most jobs' CPU: together 14 % of the node's samples in perf over 600 trivial jobs, and
/// the loop device's own kernel workers (2026-12-01). The filesystems have a journal for this
/// (<see cref="LoopDiskVolumes"/>): without one, ext4 scans past every inode freed in the last minutes at each file
/// it creates. At most twice <c>size</c> such disks wait or are being emptied (a node's jobs overlap their neighbours' start
/// and release); jobs' data never outlives its job's release by more than the emptying.</para>
/// <para>Ownership: a waiting or spare directory is the pool's, <c>ROOT/PREFIXN</c>: a waiting image never mounted and
/// never bound to a loop device, a spare's image unmounted (its loop device may still hold it until the filesystem that
/// used it is gone, which is what the pool waits for); once renamed to a job's directory the disk is that job's volume, whose release unmounts it and
/// hands the directory back (or deletes it, when it was not released cleanly). The pool starts formatting at its first
/// request (after the node janitor has run), when a request finds it empty, and when a disk it handed out has been
/// released (so that formatting the next one is not on the path of the job that takes one); disposing the pool deletes
/// the waiting and spare directories. After a crash they are plain directories named with the node's prefix under the
/// run root, which the janitor removes at the next start.</para>
/// </remarks>
public sealed partial class PooledDiskVolumes : IDiskVolumes, IAsyncDisposable, IDisposable
{
    /// <summary>How long the pool waits for a used image's loop device to let go of it before it makes a new image instead
    /// (<see cref="LoopDiskVolumes.ReformatImageAsync"/>). Off the jobs' path.</summary>
    internal static readonly TimeSpan ReuseWait = TimeSpan.FromSeconds(2);

    /// <summary>A disk whose job left more files than this is unmounted and its image emptied: deleting them one by one costs more.</summary>
    internal const long MaxInodesToEmpty = 1024;
    /// <summary>Likewise for the bytes a job left in use (outputs are moved off the disk before it is released).</summary>
    internal const long MaxBytesToEmpty = 256L << 20;
    /// <summary>A disk emptied in place gives its freed blocks back to the host when its job left more than this in use.</summary>
    internal const long TrimAboveBytes = 1L << 20;

    private readonly LoopDiskVolumes _maker;
    private readonly string _root;
    private readonly string _namePrefix;
    private readonly long _limitBytes;
    private readonly int _size;
    private readonly ILogger _logger;
    private readonly Queue<string> _ready = new();
    /// <summary>Directories handed back by released disks, to empty again: their empty mount point, and the image of the
    /// job that used it with the loop device it was bound to.</summary>
    private readonly Queue<Spare> _spare = new();
    private readonly object _gate = new();
    private readonly List<Task> _making = [];
    /// <summary>Disks kept mounted, emptied, waiting: their directory (the pool's) and the volume in it.</summary>
    private readonly Queue<(string Dir, LoopDiskVolume Volume)> _mounted = new();
    /// <summary>Disks being emptied while mounted (<see cref="EmptyAsync"/>), and how many of them are not done.</summary>
    private readonly List<Task> _emptying = [];
    private int _emptyingNow;
    private readonly KeepMounted? _keepMounted;
    private bool _disposed;
    private bool _failed;

    /// <param name="maker">Formats and mounts each disk (<see cref="LoopDiskVolumes"/>).</param>
    /// <param name="root">Where waiting images' directories are made: the run root, on the filesystem jobs' directories are on.</param>
    /// <param name="namePrefix">Their directories' name prefix: the node's, so that its janitor removes them after a crash.</param>
    /// <param name="limitBytes">The limit the pool's disks are made for (the node's default).</param>
    /// <param name="size">How many wait at most; 0 turns the pool off.</param>
    /// <param name="keepMounted">Empty a released disk in place, mounted, when it can be (see the remarks), and hand it out
    /// again; null: every released disk is unmounted.</param>
    public PooledDiskVolumes(LoopDiskVolumes maker, string root, string namePrefix, long limitBytes, int size, ILogger<PooledDiskVolumes>? logger = null,
        KeepMounted? keepMounted = null)
    {
        _keepMounted = keepMounted;
        ArgumentOutOfRangeException.ThrowIfNegative(size);
        if (string.IsNullOrEmpty(namePrefix)) throw new ArgumentException("a name prefix is required: it is how the janitor finds leftovers", nameof(namePrefix));
        _maker = maker;
        _root = root;
        _namePrefix = namePrefix;
        _limitBytes = limitBytes;
        _size = size;
        _logger = logger ?? (ILogger)NullLogger.Instance;
    }

    /// <summary>Formatted images waiting now.</summary>
    public int Ready { get { lock (_gate) return _ready.Count; } }

    /// <summary>Disks kept mounted and emptied, waiting now.</summary>
    public int Mounted { get { lock (_gate) return _mounted.Count; } }

    public async Task<IDiskVolume> CreateAsync(string dir, long limitBytes, CancellationToken ct)
    {
        if (limitBytes == _limitBytes)
        {
            // A disk kept mounted first: nothing to mount. Renamed into place, so only when the job's directory does not exist yet.
            (string Dir, LoopDiskVolume Volume)? kept = null;
            if (_keepMounted is not null && !Directory.Exists(dir))
                lock (_gate)
                    if (_mounted.Count > 0) kept = _mounted.Dequeue();
            if (kept is { } k)
            {
                try { Directory.Move(k.Dir, dir); }
                catch
                {
                    await DiscardAsync(k.Dir, k.Volume);
                    throw;
                }
                LogTaken(_logger, k.Dir, dir);
                return new PooledDiskVolume(k.Volume.MovedTo(dir), this, recyclable: true);
            }

            string? waiting = null;
            lock (_gate)
            {
                if (_ready.Count > 0) waiting = _ready.Dequeue();
            }
            if (waiting is not null)
            {
                // Same filesystem (both under the run root): a rename of the directory when the job's does not exist yet
                // (DiskPhase), else of the image into it (the pool's directory then goes).
                var moved = !Directory.Exists(dir);
                try
                {
                    if (moved) Directory.Move(waiting, dir);
                    else File.Move(System.IO.Path.Combine(waiting, LoopDiskVolumes.ImageFileName), System.IO.Path.Combine(dir, LoopDiskVolumes.ImageFileName));
                }
                catch
                {
                    RemoveShell(waiting);
                    throw;
                }
                if (!moved) RemoveShell(waiting);
                LogTaken(_logger, waiting, dir);
                return new PooledDiskVolume((LoopDiskVolume)_maker.MountImage(dir, limitBytes), this, recyclable: moved);
            }
            // Empty (at the first request, or jobs take disks faster than they give them back): start making more now, and
            // make this one here, in a spare directory when there is one; it comes back to the pool like the others.
            Spare? spare = null;
            lock (_gate)
            {
                if (_spare.Count > 0 && !Directory.Exists(dir)) spare = _spare.Dequeue();
            }
            Refill();
            var recyclable = !Directory.Exists(dir);
            if (spare is not null)
            {
                try { Directory.Move(spare.Dir, dir); }
                catch
                {
                    RemoveShell(spare.Dir);
                    throw;
                }
            }
            try
            {
                // A spare's used image is emptied in place when its loop device has let go of it already (no waiting on
                // the job's path); otherwise a new one is made.
                if (spare is not null)
                {
                    await _maker.ReformatImageAsync(dir, limitBytes, spare.Loop, TimeSpan.Zero, ct);
                    return new PooledDiskVolume((LoopDiskVolume)_maker.MountImage(dir, limitBytes), this, recyclable);
                }
                return new PooledDiskVolume((LoopDiskVolume)await _maker.CreateAsync(dir, limitBytes, ct), this, recyclable);
            }
            catch when (spare is not null)
            {
                // The maker removed what it made (the image); the spare's mount point and the directory go too.
                RemoveShell(dir);
                throw;
            }
        }
        return await _maker.CreateAsync(dir, limitBytes, ct);
    }

    /// <summary>Waits until the images being formatted are ready (or failed), and the disks being emptied in place are
    /// waiting (or went back to be unmounted): for tests and shutdown.</summary>
    public async Task FilledAsync()
    {
        List<Task> emptying;
        lock (_gate) emptying = [.. _emptying];
        await Task.WhenAll(emptying);
        List<Task> making;
        lock (_gate) making = [.. _making];
        await Task.WhenAll(making);
    }

    /// <summary>
    /// Keeps the released <paramref name="volume"/> mounted when it can be emptied in place (see the remarks): its
    /// directory is renamed to the pool's at once and emptied off the caller's path. False when the caller must release
    /// it as before (nothing was changed then).
    /// </summary>
    private bool TryKeepMounted(LoopDiskVolume volume)
    {
        if (_keepMounted is null) return false;
        var dir = System.IO.Path.GetDirectoryName(volume.Path)!;
        DiskUsage left;
        try
        {
            if (!IsShell(dir) || !OnlyTheDiskMountedAt(volume.Path)) return false;
            left = volume.ReadUsage();
            if (left.UsedBytes > MaxBytesToEmpty || volume.InodesInUse(left) > MaxInodesToEmpty) return false;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidOperationException)
        {
            return false;
        }
        // In one hold of the lock: a disposal either sees the emptying task and waits for it, or comes first and keeps none.
        lock (_gate)
        {
            _emptying.RemoveAll(t => t.IsCompleted);
            if (_disposed || _mounted.Count + _emptyingNow >= 2 * _size) return false;
            var pooled = System.IO.Path.Combine(_root, _namePrefix + Guid.NewGuid().ToString("N")[..12]);
            try { Directory.Move(dir, pooled); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                return false;
            }
            var moved = volume.MovedTo(pooled);
            _emptyingNow++;
            _emptying.Add(Task.Run(() => EmptyAsync(pooled, moved, left.UsedBytes)));
            return true;
        }
    }

    /// <summary>The disk is mounted at <paramref name="mountPoint"/> and nothing is mounted on any of its directories (a
    /// root filesystem's overlay left there would be deleted through).</summary>
    private static bool OnlyTheDiskMountedAt(string mountPoint) =>
        LoopDiskVolume.IsMounted(mountPoint) && Directory.EnumerateDirectories(mountPoint).All(d => !LoopDiskVolume.IsMounted(d));

    /// <summary>Deletes what the job left on the mounted <paramref name="volume"/> (in the pool's <paramref name="dir"/>),
    /// makes its top directories again and hands it out once it is exactly as empty as when it was mounted; otherwise
    /// unmounts it and empties its image as any released disk's (<see cref="Recycle"/>).</summary>
    /// <param name="leftBytes">What the job left in use when it released the disk.</param>
    private async Task EmptyAsync(string dir, LoopDiskVolume volume, long leftBytes)
    {
        var kept = false;
        try
        {
            var top = _maker.Directories;
            foreach (var entry in Directory.GetFileSystemEntries(volume.Path))
            {
                var name = System.IO.Path.GetFileName(entry);
                if (name == "lost+found") continue;
                if (top.Contains(name) && !_keepMounted!.RenewedDirectories.Contains(name) && IsDirectory(entry))
                    foreach (var inside in Directory.GetFileSystemEntries(entry)) Delete(inside);
                else
                    Delete(entry);
            }
            foreach (var name in top)
            {
                var path = System.IO.Path.Combine(volume.Path, name);
                if (Directory.Exists(path)) continue;
                Directory.CreateDirectory(path, LoopDiskVolumes.DirectoryMode);
                File.SetUnixFileMode(path, LoopDiskVolumes.DirectoryMode); // whatever the process's umask
            }
            // What a container's mount namespace still going away holds (its /outputs, its overlay's directories) is freed
            // with it, a moment later.
            var started = System.Diagnostics.Stopwatch.GetTimestamp();
            while (!volume.IsEmpty)
            {
                if (System.Diagnostics.Stopwatch.GetElapsedTime(started) >= ReuseWait)
                    throw new IOException($"it still used more than the empty filesystem after {ReuseWait.TotalSeconds:0} s");
                await Task.Delay(10);
            }
            // The host's blocks under what was deleted go back to it (a journal commit and FITRIM) when there were more than a
            // few: a trivial job's few blocks stay in the image, where the next job's files take them again.
            if (leftBytes > TrimAboveBytes) volume.ReleaseFreedSpace();
            lock (_gate)
            {
                if (!_disposed)
                {
                    _mounted.Enqueue((dir, volume));
                    kept = true;
                }
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidOperationException)
        {
            LogNotEmptied(_logger, dir, e.Message);
        }
        finally
        {
            lock (_gate) _emptyingNow--;
        }
        if (kept) return;
        try
        {
            if (await volume.ReleaseKeepingImageAsync()) Recycle(dir, volume.LoopName);
            else RemoveShell(dir);
        }
        catch (IOException e) { LogRemoveFailed(_logger, dir, e.Message); }
        Refill();
    }

    /// <summary>A directory itself, not a link to one.</summary>
    private static bool IsDirectory(string path) =>
        BatchRunner.Native.Libc.TryStat(BatchRunner.Native.Libc.AT_FDCWD, path, out var st) && st.IsDirectory;

    /// <summary>Deletes a file or a directory's whole tree, never following a link: a job's symbolic link is deleted, not
    /// what it points to.</summary>
    private static void Delete(string path)
    {
        if (IsDirectory(path)) Directory.Delete(path, recursive: true);
        else File.Delete(path);
    }

    /// <summary>Unmounts a disk kept mounted and removes it with its directory (the pool is going, or the directory could not be moved).</summary>
    private async Task DiscardAsync(string dir, LoopDiskVolume volume)
    {
        try
        {
            await volume.DisposeAsync();
            if (Directory.Exists(dir)) Directory.Delete(dir);
        }
        catch (IOException e) { LogRemoveFailed(_logger, dir, e.Message); }
    }

    /// <summary>The directory holds the disk's image and mount point, nothing else.</summary>
    private static bool IsShell(string dir) =>
        Directory.EnumerateFileSystemEntries(dir).Select(System.IO.Path.GetFileName).Order(StringComparer.Ordinal).ToList()
            is [LoopDiskVolumes.MountDirName, LoopDiskVolumes.ImageFileName];

    private void Refill()
    {
        lock (_gate)
        {
            _making.RemoveAll(t => t.IsCompleted);
            // An image that could not be made is not retried in a loop: jobs make their own (and say why) until one is handed out.
            if (_failed) { _failed = false; return; }
            while (!_disposed && _ready.Count + _making.Count < _size)
                _making.Add(Task.Run(MakeOneAsync));
        }
    }

    private async Task MakeOneAsync()
    {
        Spare? spare;
        lock (_gate) spare = _spare.Count > 0 ? _spare.Dequeue() : null;
        var dir = spare?.Dir ?? System.IO.Path.Combine(_root, _namePrefix + Guid.NewGuid().ToString("N")[..12]);
        try
        {
            // The mount point is made here, off the path of the job that takes the disk (a spare has it already).
            Directory.CreateDirectory(System.IO.Path.Combine(dir, LoopDiskVolumes.MountDirName));
            if (spare is not null)
                await _maker.ReformatImageAsync(dir, _limitBytes, spare.Loop, ReuseWait, CancellationToken.None);
            else
                await _maker.FormatImageAsync(dir, _limitBytes, CancellationToken.None);
            bool keep;
            lock (_gate)
            {
                keep = !_disposed;
                if (keep) _ready.Enqueue(dir);
            }
            if (!keep) RemoveShell(dir);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            lock (_gate) _failed = true;
            LogMakeFailed(_logger, dir, e.Message);
            RemoveShell(dir);
        }
    }

    /// <summary>A released disk's directory (<paramref name="dir"/>, the job's, holding only the empty mount point and the
    /// used image, last bound to <paramref name="loopName"/>) comes back as a spare, under a name of the pool's; when the
    /// pool has as many spares as it keeps images, or is disposed, or the directory holds anything else, the image and the
    /// mount point are deleted instead (and the directory too, unless it holds anything else). So the pool holds at most
    /// twice its size: the formatted images waiting, and as many used ones to empty next.</summary>
    private void Recycle(string dir, string loopName)
    {
        var shell = IsShell(dir);
        string? spare = null;
        lock (_gate)
        {
            // Kept whatever the number waiting: the next refill, or the next disk made on demand, empties it in place instead
            // of deleting it now and making a new file then (a freed and a new inode of the data disk, and the new file's
            // fsync). Counting the waiting ones too, as at first, deleted most released images in a steady stream of jobs.
            if (shell && !_disposed && _spare.Count < _size)
            {
                spare = System.IO.Path.Combine(_root, _namePrefix + Guid.NewGuid().ToString("N")[..12]);
                try { Directory.Move(dir, spare); _spare.Enqueue(new Spare(spare, loopName)); }
                catch (IOException) { spare = null; }
            }
        }
        if (spare is not null) return;
        if (shell)
        {
            RemoveShell(dir);
            return;
        }
        // Not the pool's to take: the image and the mount point go as a plain disposal's would, the directory stays its owner's.
        RemoveDisk(dir, withDirectory: false);
    }

    /// <summary>Deletes a pool directory: its image, its mount point (never mounted while the pool holds it), itself.</summary>
    private void RemoveShell(string dir) => RemoveDisk(dir, withDirectory: true);

    private void RemoveDisk(string dir, bool withDirectory)
    {
        try
        {
            var image = System.IO.Path.Combine(dir, LoopDiskVolumes.ImageFileName);
            if (File.Exists(image)) File.Delete(image);
            var mountPoint = System.IO.Path.Combine(dir, LoopDiskVolumes.MountDirName);
            if (Directory.Exists(mountPoint)) Directory.Delete(mountPoint);
            if (withDirectory && Directory.Exists(dir)) Directory.Delete(dir);
        }
        catch (IOException e) { LogRemoveFailed(_logger, dir, e.Message); }
    }

    public async ValueTask DisposeAsync()
    {
        List<Task> making;
        lock (_gate)
        {
            _disposed = true;
            making = [.. _making, .. _emptying];
        }
        await Task.WhenAll(making);
        List<string> ready;
        List<(string Dir, LoopDiskVolume Volume)> mounted;
        lock (_gate)
        {
            ready = [.. _ready, .. _spare.Select(s => s.Dir)];
            mounted = [.. _mounted];
            _ready.Clear();
            _spare.Clear();
            _mounted.Clear();
        }
        foreach (var dir in ready) RemoveShell(dir);
        foreach (var (dir, volume) in mounted) await DiscardAsync(dir, volume);
    }

    /// <summary>For a host that disposes its services synchronously.</summary>
    public void Dispose() => DisposeAsync().AsTask().GetAwaiter().GetResult();

    /// <summary>A disk formatted ahead, now the job's own volume. Released, it hands its directory back to the pool when it
    /// was renamed into place whole (<paramref name="recyclable"/>) and unmounted cleanly, then the pool formats the next
    /// one: after its job has ended, off the path of the job that takes a disk.</summary>
    private sealed class PooledDiskVolume(LoopDiskVolume inner, PooledDiskVolumes pool, bool recyclable) : IDiskVolume
    {
        public string Path => inner.Path;
        public long LimitBytes => inner.LimitBytes;
        public DiskUsage ReadUsage() => inner.ReadUsage();
        public void ReleaseFreedSpace() => inner.ReleaseFreedSpace();

        public async ValueTask DisposeAsync()
        {
            if (recyclable && pool.TryKeepMounted(inner)) return;
            if (recyclable && await inner.ReleaseKeepingImageAsync())
                pool.Recycle(System.IO.Path.GetDirectoryName(inner.Path)!, inner.LoopName);
            else
                await inner.DisposeAsync();
            pool.Refill();
        }
    }

    /// <summary>A directory handed back with its used image; <paramref name="Loop"/> names the loop device the image was
    /// last bound to.</summary>
    private sealed record Spare(string Dir, string Loop);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Disk image formatted ahead in {PoolDir} taken for {Dir}")]
    private static partial void LogTaken(ILogger logger, string poolDir, string dir);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Formatting a job disk ahead in {Dir} failed: {Error}; jobs make their own meanwhile")]
    private static partial void LogMakeFailed(ILogger logger, string dir, string error);

    [LoggerMessage(Level = LogLevel.Debug, Message = "The released job disk in {Dir} could not be emptied in place ({Error}); it is unmounted and its image emptied instead")]
    private static partial void LogNotEmptied(ILogger logger, string dir, string error);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Removing the waiting job disk image in {Dir} failed: {Error}")]
    private static partial void LogRemoveFailed(ILogger logger, string dir, string error);
}

/// <summary>How <see cref="PooledDiskVolumes"/> empties a released disk in place, mounted.</summary>
/// <param name="RenewedDirectories">The disk's top directories (<see cref="LoopDiskOptions.Directories"/>) that a job reaches
/// itself and may have changed (its mode, owner, extended attributes, flags): deleted and made anew. The others are emptied.</param>
public sealed record KeepMounted(IReadOnlyList<string> RenewedDirectories);
