using BatchRunner.Runtime;
using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Hosting;

/// <summary>
/// Who may use the data directory. It holds job inputs, logs and outputs, image layers (with the setuid files and
/// device nodes containers need), the API key and the embedded database: no host user but root may read, list or
/// enter anything below it.
/// </summary>
/// <remarks>
/// <para>Two host users other than root may need to <em>search</em> (never read or list) the data directory itself:</para>
/// <list type="bullet">
/// <item>the embedded PostgreSQL's user, to reach its own DATA/postgres and DATA/postgres-run (0700, its own);</item>
/// <item>with a user namespace, its mapped root (HostUidStart:HostGidStart): runc mounts the rootfs, /inputs and
/// /outputs from inside the namespace, so that user must search DATA, DATA/run and DATA/jobs on the way.</item>
/// </list>
/// <para>A directory has one group, so the narrowest mode that works is 0700 when neither needs it; 0710 with the
/// group of the one that does (or of both, when they share a group); 0711 when both do. Even 0711 lets others
/// search only: nobody can list DATA, and each entry in it is closed to them (directories 0700 or 0710 with the
/// namespace's group, files 0600), so a guessed path leads nowhere. DATA/run and DATA/jobs are 0710 with the
/// namespace's group when there is one, everything else directly in DATA loses its group and other bits.</para>
/// </remarks>
/// <param name="Group">The data directory's group (its owner stays root); null: leave it.</param>
public sealed record DataDirectoryAccess(uint? Group, UnixFileMode Mode, string Reason)
{
    private const UnixFileMode Owner = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;
    private const UnixFileMode OwnerGroupSearch = Owner | UnixFileMode.GroupExecute;

    /// <param name="postgresGid">The group of the user the embedded PostgreSQL runs as, when it is not this process's.</param>
    /// <param name="userNamespaceGid">HostGidStart of the user namespace jobs run in, when they do.</param>
    public static DataDirectoryAccess For(uint? postgresGid, uint? userNamespaceGid) => (postgresGid, userNamespaceGid) switch
    {
        (null, null) => new(null, Owner, "only root uses it"),
        ({ } pg, null) => new(pg, OwnerGroupSearch, $"the embedded PostgreSQL's group ({pg}) searches it to reach DATA/postgres"),
        (null, { } ns) => new(ns, OwnerGroupSearch, $"the user namespace's group ({ns}) searches it: runc mounts from inside the namespace"),
        ({ } pg, { } ns) when pg == ns => new(pg, OwnerGroupSearch, $"group {pg} searches it (the embedded PostgreSQL's and the user namespace's)"),
        _ => new(null, OwnerGroupSearch | UnixFileMode.OtherExecute,
            "both the embedded PostgreSQL's user and the user namespace's root search it, and a directory has one group: " +
            "others may search it but not list it, and every entry in it is closed to them"),
    };

    /// <summary>
    /// Creates the data directory's top-level directories and sets the modes described on the type, on every start
    /// (a data directory made by an older version had 0755 directories). Needs root to change a group.
    /// </summary>
    public void Apply(DataPaths paths, uint? userNamespaceGid)
    {
        var root = paths.Root;
        Directory.CreateDirectory(root);
        if (Group is { } group) HostFiles.Chown(root, 0, group);
        File.SetUnixFileMode(root, Mode);

        foreach (var dir in new[] { paths.Images, paths.JobsRoot, paths.RunRoot, paths.State, paths.InputsStaging, paths.InputsStore })
            Directory.CreateDirectory(dir);
        // The user namespace's root must search these on the way to a job's rootfs, /inputs and /outputs.
        var namespaceSearched = new HashSet<string>(StringComparer.Ordinal) { paths.JobsRoot, paths.RunRoot };
        foreach (var entry in new DirectoryInfo(root).EnumerateFileSystemInfos())
        {
            if (entry.LinkTarget is not null) continue; // chmod would follow it
            if (userNamespaceGid is { } ns && namespaceSearched.Contains(entry.FullName))
            {
                HostFiles.Chown(entry.FullName, 0, ns);
                entry.UnixFileMode = OwnerGroupSearch;
                continue;
            }
            // Owner bits stay (PostgreSQL's own directories are 0700 to their user; it logs inside DATA/postgres);
            // everything for the group and others goes.
            entry.UnixFileMode &= Owner;
        }
    }
}
