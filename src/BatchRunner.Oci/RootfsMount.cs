namespace BatchRunner.Oci;

/// <summary>An overlay root filesystem for one container. Disposing unmounts it and removes upper/work/rootfs.</summary>
public sealed class RootfsMount : IAsyncDisposable
{
    // STUB: to be completed by the overlay snapshotter.
    public RootfsMount(string rootfsPath, string workDir) { RootfsPath = rootfsPath; WorkDir = workDir; }
    public string RootfsPath { get; }
    public string WorkDir { get; }
    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}
