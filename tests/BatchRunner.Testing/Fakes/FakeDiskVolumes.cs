using BatchRunner.Runtime;

namespace BatchRunner.Testing.Fakes;

/// <summary>
/// An <see cref="IDiskVolumes"/> whose volumes are plain directories (DIR/disk) with a usage the test sets. Counts the
/// volumes not yet disposed, so a test can check that every disk was released. For unit tests of logic; the real
/// loop-device volumes are tested in Runtime.Tests.
/// </summary>
public sealed class FakeDiskVolumes : IDiskVolumes
{
    private int _live;

    /// <summary>Volumes made and not yet disposed.</summary>
    public int Live => Volatile.Read(ref _live);

    /// <summary>The volume made last.</summary>
    public FakeDiskVolume? Last { get; private set; }

    /// <summary>When set, <see cref="CreateAsync"/> throws this instead of making a volume.</summary>
    public IOException? FailCreate { get; set; }

    /// <summary>Called with each volume as it is made (e.g. to set its usage).</summary>
    public Action<FakeDiskVolume>? OnCreate { get; set; }

    public Task<IDiskVolume> CreateAsync(string dir, long limitBytes, CancellationToken ct)
    {
        ct.ThrowIfCancellationRequested();
        if (FailCreate is { } e) throw e;
        var volume = new FakeDiskVolume(Directory.CreateDirectory(Path.Combine(dir, "disk")).FullName, limitBytes, this);
        Interlocked.Increment(ref _live);
        Last = volume;
        OnCreate?.Invoke(volume);
        return Task.FromResult<IDiskVolume>(volume);
    }

    internal void Released() => Interlocked.Decrement(ref _live);
}

/// <summary>A volume of <see cref="FakeDiskVolumes"/>: a directory whose usage is whatever the test says.</summary>
public sealed class FakeDiskVolume(string path, long limitBytes, FakeDiskVolumes owner) : IDiskVolume
{
    private long _used;
    private int _disposed;

    public string Path { get; } = path;
    public long LimitBytes { get; } = limitBytes;
    public int Releases;

    /// <summary>What <see cref="ReadUsage"/> reports as used.</summary>
    public long UsedBytes { get => Interlocked.Read(ref _used); set => Interlocked.Exchange(ref _used, value); }

    public DiskUsage ReadUsage() =>
        Volatile.Read(ref _disposed) == 1 ? throw new InvalidOperationException($"disk volume {Path} is not mounted")
            : new DiskUsage(UsedBytes, LimitBytes, Math.Max(0, LimitBytes - UsedBytes), 1000);

    public void ReleaseFreedSpace() => Interlocked.Increment(ref Releases);

    public ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1) return ValueTask.CompletedTask;
        if (Directory.Exists(Path)) Directory.Delete(Path, recursive: true);
        owner.Released();
        return ValueTask.CompletedTask;
    }
}
