namespace BatchRunner.Runtime.Spec;

/// <summary>Builds the OCI runtime spec of a BatchRunner container from a <see cref="ContainerSpec"/>.</summary>
public static class SpecBuilder
{
    /// <summary>Parent cgroup of every BatchRunner container (cgroupfs driver): /batchrunner/ID.</summary>
    public const string CgroupParent = "batchrunner";

    public static string CgroupsPathFor(string containerId) => $"/{CgroupParent}/{containerId}";

    public static RuntimeSpec Build(params IEnumerable<SpecOpt> opts)
    {
        var spec = new RuntimeSpec();
        SpecOpts.Compose(opts)(spec);
        return spec;
    }

    /// <summary>
    /// The hardened defaults every job gets: no capabilities, no new privileges, the first OOM victims, its own pid, network
    /// (loopback only), ipc, uts and mount namespaces, every device denied except runc's defaults,
    /// masked and read-only kernel paths; then the job's limits and mounts. <paramref name="extra"/>
    /// runs last (e.g. a seccomp profile, GPU devices).
    /// </summary>
    public static RuntimeSpec ForContainer(ContainerSpec c, params IEnumerable<SpecOpt> extra)
    {
        var opts = new List<SpecOpt>
        {
            SpecOpts.WithProcessArgs(c.Args),
            SpecOpts.WithEnv(c.Env),
            SpecOpts.WithCwd(c.Cwd),
            SpecOpts.WithUser(c.Uid, c.Gid, c.AdditionalGids),
            SpecOpts.WithNoNewPrivileges(),
            SpecOpts.WithOomScoreAdj(c.OomScoreAdj),
            SpecOpts.WithNoCapabilities(),
            SpecOpts.WithRlimit("RLIMIT_NOFILE", SpecOpts.DefaultNoFileLimit, SpecOpts.DefaultNoFileLimit),
            SpecOpts.WithRootfs(c.RootfsPath, c.ReadonlyRootfs),
            SpecOpts.WithHostname(c.Hostname),
            SpecOpts.WithDefaultMounts(),
            SpecOpts.WithBindMounts(c.Mounts),
            SpecOpts.WithNamespaces(SpecOpts.DefaultNamespaces),
            SpecOpts.WithCgroupsPath(CgroupsPathFor(c.Id)),
            SpecOpts.WithDenyAllDevices(),
            SpecOpts.WithMaskedPaths(SpecOpts.DefaultMaskedPaths),
            SpecOpts.WithReadonlyPaths(SpecOpts.DefaultReadonlyPaths),
        };
        if (c.Cpus is { } cpus) opts.Add(SpecOpts.WithCpus(cpus));
        if (c.MemoryLimitBytes is { } mem) opts.Add(SpecOpts.WithMemoryLimit(mem));
        if (c.PidsLimit is { } pids) opts.Add(SpecOpts.WithPidsLimit(pids));
        opts.AddRange(SpecOpts.ForIsolation(c));
        opts.AddRange(extra);
        return Build(opts);
    }
}
