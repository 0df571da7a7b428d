using BatchRunner.Oci.Snapshots;
using BatchRunner.Runtime.Disk;

namespace BatchRunner.Server.Storage;

/// <summary>
/// Removes attempts' run directories (<c>DATA/run/CONTAINER-ID</c>) that their owner could not: a crashed worker's
/// (<c>NodeJanitor</c> at the next start) or a deleted job's whose release failed (<see cref="JobFiles"/>). Each
/// directory's mounts go first, deepest first (a rootfs overlay, then the job disk it lies on; the disk's loop device
/// unbinds itself once unmounted), then loop devices still bound to an image there (a worker killed between binding
/// and mounting), then the directory with its disk image.
/// </summary>
/// <remarks>A directory under which a mount would not go is kept and reported: deleting through a mount would damage
/// what it shows.</remarks>
public static class RunDirectories
{
    /// <param name="namePrefix">Only directories whose names start with it: this node's container prefix, or that
    /// followed by one job's id.</param>
    public static RunDirectoryRemoval Remove(string runRoot, string namePrefix)
    {
        int mounts = 0, loops = 0, removed = 0;
        var kept = new List<(string Dir, string Why)>();
        if (!Directory.Exists(runRoot)) return new(0, 0, 0, kept);
        foreach (var dir in Directory.GetDirectories(runRoot, namePrefix + "*"))
        {
            mounts += MountCleanup.UnmountAllUnder(dir).Count;
            loops += LoopDiskVolumes.RemoveLeftovers(dir).Count;
            if (MountCleanup.AnyMountAtOrUnder(dir))
            {
                kept.Add((dir, "a mount under it would not go"));
                continue;
            }
            try
            {
                Directory.Delete(dir, recursive: true);
                removed++;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                kept.Add((dir, e.Message));
            }
        }
        return new(mounts, loops, removed, kept);
    }
}

/// <param name="Kept">Directories that could not be removed, and why.</param>
public sealed record RunDirectoryRemoval(int Mounts, int Loops, int Dirs, IReadOnlyList<(string Dir, string Why)> Kept);
