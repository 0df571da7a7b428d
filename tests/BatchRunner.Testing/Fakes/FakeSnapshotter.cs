using BatchRunner.Oci;

namespace BatchRunner.Testing.Fakes;

/// <summary>
/// An <see cref="ISnapshotter"/> that mounts nothing: the "root filesystem" is an empty directory rootfs/ in the
/// caller's work directory, removed again on dispose. Counts what is still "mounted", so a test can check that
/// every root was released.
/// </summary>
public sealed class FakeSnapshotter : ISnapshotter
{
    private int _mounted;

    public int Mounted => Volatile.Read(ref _mounted);

    public Task<IRootfs> MountAsync(IReadOnlyList<string> lowerDirs, string workDir, bool scratchDiscarded, CancellationToken ct)
    {
        ct.ThrowIfCancellationRequested();
        var rootfs = Path.Combine(workDir, "rootfs");
        Directory.CreateDirectory(rootfs);
        Interlocked.Increment(ref _mounted);
        return Task.FromResult<IRootfs>(new Rootfs(this, rootfs));
    }

    private sealed class Rootfs(FakeSnapshotter owner, string path) : IRootfs
    {
        private int _disposed;

        public string RootfsPath { get; } = path;

        public ValueTask DisposeAsync()
        {
            if (Interlocked.Exchange(ref _disposed, 1) == 1) return ValueTask.CompletedTask;
            if (Directory.Exists(RootfsPath)) Directory.Delete(RootfsPath, recursive: true);
            Interlocked.Decrement(ref owner._mounted);
            return ValueTask.CompletedTask;
        }
    }
}
