using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace BatchRunner.Runtime.Disk;

/// <summary>
/// Keeps up to <c>size</c> job disks of the node's default limit formatted ahead (the sparse image and mkfs.ext4, most
/// of what making one costs), so that a job asking for that limit only has its image moved into its own directory and
/// mounted there; any other limit, or an empty pool, is made on demand as before. Each image is made by the same maker
/// for the same limit and mounted by it as an on-demand one is, so it holds back exactly what an on-demand one would, and
/// the job's disk is where it always is: <c>DIR/disk.img</c> mounted at <c>DIR/disk</c>.
/// </summary>
/// <remarks>
/// Ownership: a waiting image is the pool's, in its own directory <c>ROOT/PREFIXN</c>, never mounted and never bound to a
/// loop device; once moved into a job's directory it is that job's volume, whose disposal unmounts and deletes it. The
/// pool starts formatting at its first request (after the node janitor has run), when a request finds it empty, and
/// when a disk it handed out has been disposed (so that formatting the next one is not on the path of the job that takes
/// one); disposing the pool deletes the waiting images. After a crash a waiting image is a plain file in a directory
/// named with the node's prefix under the run root, which the janitor removes at the next start.
/// </remarks>
public sealed partial class PooledDiskVolumes : IDiskVolumes, IAsyncDisposable, IDisposable
{
    private readonly LoopDiskVolumes _maker;
    private readonly string _root;
    private readonly string _namePrefix;
    private readonly long _limitBytes;
    private readonly int _size;
    private readonly ILogger _logger;
    private readonly Queue<string> _ready = new();
    private readonly object _gate = new();
    private readonly List<Task> _making = [];
    private bool _disposed;
    private bool _failed;

    /// <param name="maker">Formats and mounts each disk (<see cref="LoopDiskVolumes"/>).</param>
    /// <param name="root">Where waiting images' directories are made: the run root, on the filesystem jobs' directories are on.</param>
    /// <param name="namePrefix">Their directories' name prefix: the node's, so that its janitor removes them after a crash.</param>
    /// <param name="limitBytes">The limit the pool's disks are made for (the node's default).</param>
    /// <param name="size">How many wait at most; 0 turns the pool off.</param>
    public PooledDiskVolumes(LoopDiskVolumes maker, string root, string namePrefix, long limitBytes, int size, ILogger<PooledDiskVolumes>? logger = null)
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

    /// <summary>Formatted images waiting now.</summary>
    public int Ready { get { lock (_gate) return _ready.Count; } }

    public async Task<IDiskVolume> CreateAsync(string dir, long limitBytes, CancellationToken ct)
    {
        if (limitBytes == _limitBytes)
        {
            string? waiting = null;
            lock (_gate)
            {
                if (_ready.Count > 0) waiting = _ready.Dequeue();
            }
            if (waiting is not null)
            {
                // Same filesystem (both under the run root): a rename. Then the pool's directory is empty and goes.
                try { File.Move(System.IO.Path.Combine(waiting, LoopDiskVolumes.ImageFileName), System.IO.Path.Combine(dir, LoopDiskVolumes.ImageFileName)); }
                catch
                {
                    RemoveWaiting(waiting);
                    throw;
                }
                Directory.Delete(waiting);
                LogTaken(_logger, waiting, dir);
                return new PooledDiskVolume(_maker.MountImage(dir, limitBytes), Refill);
            }
            // Empty (at the first request, or jobs take disks faster than they give them back): start making more now.
            Refill();
        }
        return await _maker.CreateAsync(dir, limitBytes, ct);
    }

    /// <summary>Waits until the images being formatted are ready (or failed): for tests and shutdown.</summary>
    public Task FilledAsync()
    {
        lock (_gate) return Task.WhenAll(_making.ToList());
    }

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
        var dir = System.IO.Path.Combine(_root, _namePrefix + Guid.NewGuid().ToString("N")[..12]);
        try
        {
            Directory.CreateDirectory(dir);
            await _maker.FormatImageAsync(dir, _limitBytes, CancellationToken.None);
            bool keep;
            lock (_gate)
            {
                keep = !_disposed;
                if (keep) _ready.Enqueue(dir);
            }
            if (!keep) RemoveWaiting(dir);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            lock (_gate) _failed = true;
            LogMakeFailed(_logger, dir, e.Message);
            try { if (Directory.Exists(dir)) Directory.Delete(dir); }
            catch (IOException) { }
        }
    }

    private void RemoveWaiting(string dir)
    {
        try
        {
            File.Delete(System.IO.Path.Combine(dir, LoopDiskVolumes.ImageFileName));
            Directory.Delete(dir);
        }
        catch (IOException e) { LogRemoveFailed(_logger, dir, e.Message); }
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
        List<string> ready;
        lock (_gate)
        {
            ready = [.. _ready];
            _ready.Clear();
        }
        foreach (var dir in ready) RemoveWaiting(dir);
    }

    /// <summary>For a host that disposes its services synchronously.</summary>
    public void Dispose() => DisposeAsync().AsTask().GetAwaiter().GetResult();

    /// <summary>A disk formatted ahead, now the job's own volume; once it is gone the pool formats the next one: after
    /// its job has ended, off the path of the job that takes a disk.</summary>
    private sealed class PooledDiskVolume(IDiskVolume inner, Action gone) : IDiskVolume
    {
        public string Path => inner.Path;
        public long LimitBytes => inner.LimitBytes;
        public DiskUsage ReadUsage() => inner.ReadUsage();
        public void ReleaseFreedSpace() => inner.ReleaseFreedSpace();

        public async ValueTask DisposeAsync()
        {
            await inner.DisposeAsync();
            gone();
        }
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "Disk image formatted ahead in {PoolDir} taken for {Dir}")]
    private static partial void LogTaken(ILogger logger, string poolDir, string dir);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Formatting a job disk ahead in {Dir} failed: {Error}; jobs make their own meanwhile")]
    private static partial void LogMakeFailed(ILogger logger, string dir, string error);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Removing the waiting job disk image in {Dir} failed: {Error}")]
    private static partial void LogRemoveFailed(ILogger logger, string dir, string error);
}
