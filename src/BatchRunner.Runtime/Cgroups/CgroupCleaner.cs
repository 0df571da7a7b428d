using System.Diagnostics;
using BatchRunner.Native;

namespace BatchRunner.Runtime.Cgroups;

/// <summary>
/// Removes cgroups that the runtime no longer knows (a crashed worker, a failed delete): kills their
/// processes, waits until they are empty, then rmdirs them, children first.
/// </summary>
public sealed class CgroupCleaner(CgroupVersion version, string root = CgroupVersionDetector.DefaultRoot)
{
    /// <summary>Directories named <paramref name="name"/> under /PARENT in every hierarchy (v1: one per
    /// controller mount, the unified mount included on hybrid hosts; v2: one).</summary>
    public IReadOnlyList<string> FindDirs(string parent, Func<string, bool> nameMatches) =>
        ParentDirs(parent).SelectMany(SafeEnumerate).Where(dir => nameMatches(Path.GetFileName(dir))).ToList();

    /// <summary>/PARENT in every hierarchy where it exists, each hierarchy once.</summary>
    private IEnumerable<string> ParentDirs(string parent) =>
        Hierarchies.Select(h => Path.Combine(h, parent.TrimStart('/'))).Where(Directory.Exists);

    /// <summary>Removes every cgroup under /PARENT whose name starts with <paramref name="prefix"/>, except
    /// those in <paramref name="keep"/>. Returns the distinct names removed (or attempted).</summary>
    public async Task<IReadOnlyList<string>> RemoveLeftoversAsync(string parent, string prefix, IReadOnlySet<string> keep, TimeSpan timeout, CancellationToken ct)
    {
        var dirs = FindDirs(parent, n => n.StartsWith(prefix, StringComparison.Ordinal) && !keep.Contains(n));
        foreach (var dir in dirs) await RemoveAsync(dir, timeout, ct);
        return dirs.Select(Path.GetFileName).Distinct().OrderBy(n => n, StringComparer.Ordinal).ToList()!;
    }

    /// <summary>Removes the cgroup named <paramref name="name"/> under /PARENT in every hierarchy.</summary>
    /// <remarks>A container's cgroups are most often empty by the time they are removed (its init has exited, and its PID
    /// namespace with it): each is first tried with one rmdir, which the kernel refuses (EBUSY) while a process or a child
    /// cgroup is left; only then is it thawed, killed and waited for. A dozen hierarchies on a hybrid host: the probes of
    /// freezer state, processes and children were about 5 % of a worker's CPU per trivial job.</remarks>
    /// <remarks>The hierarchies are listed once (<see cref="Hierarchies"/>); a hierarchy without the cgroup answers the rmdir
    /// with ENOENT. Listing them, and asking whether each parent and each cgroup exists, at every removal was three dozen
    /// calls on the cgroup and sysfs file systems per job.</remarks>
    public async Task RemoveAsync(string parent, string name, TimeSpan timeout, CancellationToken ct)
    {
        foreach (var hierarchy in Hierarchies)
        {
            var dir = Path.Combine(hierarchy, parent.TrimStart('/'), name);
            if (!TryRemoveEmpty(dir)) await RemoveAsync(dir, timeout, ct);
        }
    }

    private IReadOnlyList<string>? _hierarchies;

    /// <summary>Every hierarchy once (v1: one per controller mount, the unified mount included on hybrid hosts, "cpu" and
    /// "cpuacct" once when they are links to one mount; v2: the root), listed at the first removal: a host's cgroup mounts
    /// do not change under a running node.</summary>
    private IReadOnlyList<string> Hierarchies => _hierarchies ??= ListHierarchies();

    private List<string> ListHierarchies()
    {
        if (version == CgroupVersion.V2) return [root];
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var list = new List<string>();
        foreach (var h in SafeEnumerate(root))
            if (seen.Add(new DirectoryInfo(h).ResolveLinkTarget(true)?.FullName ?? h)) list.Add(h);
        return list;
    }

    /// <summary>One rmdir: true when the cgroup is gone (or was never there), false when the kernel keeps it (EBUSY: a
    /// process or a child cgroup is left) or refuses otherwise, for the slow path to deal with.</summary>
    private static bool TryRemoveEmpty(string dir) =>
        Libc.unlinkat(Libc.AT_FDCWD, dir, Libc.AT_REMOVEDIR) == 0 || Libc.Errno == Libc.ENOENT;

    /// <summary>Kills the processes of one cgroup directory (and its children) and removes it.
    /// Throws <see cref="IOException"/> when it is still busy after <paramref name="timeout"/>.</summary>
    public static async Task RemoveAsync(string dir, TimeSpan timeout, CancellationToken ct)
    {
        var sw = Stopwatch.StartNew();
        var delay = 5;
        while (true)
        {
            Thaw(dir);
            var pids = CgroupStats.ReadProcsRecursive(dir);
            foreach (var pid in pids) Libc.kill(pid, Libc.SIGKILL);
            if (pids.Count == 0 && TryRemoveTree(dir)) return;
            if (sw.Elapsed > timeout)
                throw new IOException($"cgroup {dir} is still busy after {timeout.TotalSeconds:0.#} s ({pids.Count} processes left)");
            await Task.Delay(delay, ct);
            delay = Math.Min(delay * 2, 100);
        }
    }

    // A frozen (v1 freezer) cgroup does not deliver SIGKILL until thawed.
    private static void Thaw(string dir)
    {
        var state = Path.Combine(dir, "freezer.state");
        try
        {
            if (File.Exists(state) && File.ReadAllText(state).Trim() != "THAWED") File.WriteAllText(state, "THAWED");
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        var v2 = Path.Combine(dir, "cgroup.freeze");
        try
        {
            if (File.Exists(v2) && File.ReadAllText(v2).Trim() == "1") File.WriteAllText(v2, "0");
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }

    // cgroupfs directories hold only kernel files: rmdir (not a recursive delete) removes one once it
    // has no processes and no child cgroups.
    private static bool TryRemoveTree(string dir)
    {
        if (!Directory.Exists(dir)) return true;
        try
        {
            foreach (var child in Directory.EnumerateDirectories(dir)) if (!TryRemoveTree(child)) return false;
            Directory.Delete(dir, recursive: false);
            return true;
        }
        catch (DirectoryNotFoundException) { return true; }
        catch (IOException) { return false; }
    }

    private static IEnumerable<string> SafeEnumerate(string dir)
    {
        try { return Directory.EnumerateDirectories(dir).ToList(); }
        catch (IOException) { return []; }
        catch (UnauthorizedAccessException) { return []; }
    }
}
