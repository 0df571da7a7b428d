using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace BatchRunner.Runtime.Disk;

/// <summary>
/// Keeps up to <c>size</c> job disks of the node's default limit made ahead (image, mkfs.ext4, loop device, mount), so
/// that a job asking for that limit gets one at once instead of waiting for <see cref="LoopDiskVolumes"/>; any other
/// limit, or an empty pool, is made on demand as before. Each disk is made by the same maker for the same limit, so it
/// holds back exactly what an on-demand one would; nothing writes to it while it waits.
/// </summary>
/// <remarks>
/// Ownership: a waiting disk is the pool's, in its own directory <c>ROOT/PREFIXN</c> (mount at <c>disk</c>, image
/// <c>disk.img</c>); a disk handed out is the caller's, whose disposal unmounts it and deletes its image and then that
/// directory. The pool starts making disks at its first request (after the node janitor has run), when a request finds
/// it empty, and when a disk it handed out has been disposed (so that making the next one is not on the path of the job
/// that takes one); disposing the pool removes the waiting ones. After a crash a waiting disk is what a job's is: a
/// mount, maybe a bound loop device and a directory named with the node's prefix under the run root, which the janitor
/// removes at the next start.
/// </remarks>
public sealed partial class PooledDiskVolumes : IDiskVolumes, IAsyncDisposable, IDisposable
{
    private readonly IDiskVolumes _maker;
    private readonly string _root;
    private readonly string _namePrefix;
    private readonly long _limitBytes;
    private readonly int _size;
    private readonly ILogger _logger;
    private readonly Queue<PooledDiskVolume> _ready = new();
    private readonly object _gate = new();
    private readonly List<Task> _making = [];
    private bool _disposed;
    private bool _failed;

    /// <param name="maker">Makes each disk (<see cref="LoopDiskVolumes"/>).</param>
    /// <param name="root">Where waiting disks' directories are made: the run root, on the filesystem jobs' data uses.</param>
    /// <param name="namePrefix">Their directories' name prefix: the node's, so that its janitor removes them after a crash.</param>
    /// <param name="limitBytes">The limit the pool's disks are made for (the node's default).</param>
    /// <param name="size">How many wait at most; 0 turns the pool off.</param>
    public PooledDiskVolumes(IDiskVolumes maker, string root, string namePrefix, long limitBytes, int size, ILogger<PooledDiskVolumes>? logger = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(size);
        if (string.IsNullOrEmpty(namePrefix)) throw new ArgumentException("a name prefix is required: it is how the janitor finds leftovers", nameof(namePrefix));
        _maker = maker;
        _root = root;
        _namePrefix = namePrefix;
        _limitBytes = limitBytes;
        _size = size;
        _logger = logger ?? (ILogger)NullLogger.Instance;
    }

    /// <summary>Disks waiting now.</summary>
    public int Ready { get { lock (_gate) return _ready.Count; } }

    public async Task<IDiskVolume> CreateAsync(string dir, long limitBytes, CancellationToken ct)
    {
        if (limitBytes == _limitBytes)
        {
            PooledDiskVolume? ready = null;
            lock (_gate)
            {
                if (_ready.Count > 0) ready = _ready.Dequeue();
            }
            if (ready is not null)
            {
                LogTaken(_logger, ready.Path, dir);
                return ready;
            }
            // Empty (at the first request, or jobs take disks faster than they give them back): start making more now.
            Refill();
        }
        return await _maker.CreateAsync(dir, limitBytes, ct);
    }

    /// <summary>Waits until the disks being made are ready (or failed): for tests and shutdown.</summary>
    public Task FilledAsync()
    {
        lock (_gate) return Task.WhenAll(_making.ToList());
    }

    private void Refill()
    {
        lock (_gate)
        {
            _making.RemoveAll(t => t.IsCompleted);
            // A disk that could not be made is not retried in a loop: jobs make their own (and say why) until one is handed out.
            if (_failed) { _failed = false; return; }
            while (!_disposed && _ready.Count + _making.Count < _size)
                _making.Add(Task.Run(MakeOneAsync));
        }
    }

    private async Task MakeOneAsync()
    {
        var dir = System.IO.Path.Combine(_root, _namePrefix + Guid.NewGuid().ToString("N")[..12]);
        try
        {
            Directory.CreateDirectory(dir);
            var volume = new PooledDiskVolume(await _maker.CreateAsync(dir, _limitBytes, CancellationToken.None), dir, Refill);
            bool keep;
            lock (_gate)
            {
                keep = !_disposed;
                if (keep) _ready.Enqueue(volume);
            }
            if (!keep) await volume.DisposeAsync();
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            lock (_gate) _failed = true;
            LogMakeFailed(_logger, dir, e.Message);
            try { if (Directory.Exists(dir)) Directory.Delete(dir); }
            catch (IOException) { }
        }
    }

    public async ValueTask DisposeAsync()
    {
        List<Task> making;
        lock (_gate)
        {
            _disposed = true;
            making = [.. _making];
        }
        await Task.WhenAll(making);
        List<PooledDiskVolume> ready;
        lock (_gate)
        {
            ready = [.. _ready];
            _ready.Clear();
        }
        foreach (var v in ready)
        {
            try { await v.DisposeAsync(); }
            catch (IOException e) { LogRemoveFailed(_logger, v.Path, e.Message); }
        }
    }

    /// <summary>For a host that disposes its services synchronously.</summary>
    public void Dispose() => DisposeAsync().AsTask().GetAwaiter().GetResult();

    /// <summary>A pre-made disk: the maker's volume, and the directory the pool made for it, removed after it. Once it is
    /// gone the pool makes the next one: after its job has ended, off the path of the job that takes a disk.</summary>
    private sealed class PooledDiskVolume(IDiskVolume inner, string dir, Action gone) : IDiskVolume
    {
        public string Path => inner.Path;
        public long LimitBytes => inner.LimitBytes;
        public DiskUsage ReadUsage() => inner.ReadUsage();
        public void ReleaseFreedSpace() => inner.ReleaseFreedSpace();

        public async ValueTask DisposeAsync()
        {
            await inner.DisposeAsync();
            // Not recursive: the volume removed its mount point and image; anything else left must not be deleted through.
            if (Directory.Exists(dir)) Directory.Delete(dir);
            gone();
        }
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "Disk volume {MountPoint} taken from the pool for {Dir}")]
    private static partial void LogTaken(ILogger logger, string mountPoint, string dir);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Making a job disk ahead in {Dir} failed: {Error}; jobs make their own meanwhile")]
    private static partial void LogMakeFailed(ILogger logger, string dir, string error);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Removing the waiting job disk {MountPoint} failed: {Error}")]
    private static partial void LogRemoveFailed(ILogger logger, string mountPoint, string error);
}
