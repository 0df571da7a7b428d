namespace BatchRunner.Runtime.Spec;

// linux.devices and hooks of the OCI runtime spec (config.json), used by device injection (GPUs, CDI).

/// <summary>A device node the runtime creates inside the container (linux.devices).</summary>
public sealed class LinuxDeviceSpec
{
    /// <summary>Path inside the container.</summary>
    public required string Path { get; set; }
    /// <summary>"c" (character), "b" (block), "u" (unbuffered character) or "p" (FIFO).</summary>
    public required string Type { get; set; }
    public long Major { get; set; }
    public long Minor { get; set; }
    public uint? FileMode { get; set; }
    public uint? Uid { get; set; }
    public uint? Gid { get; set; }
}

/// <summary>Lifecycle hooks. runc runs createContainer hooks in the container's mount namespace after its
/// mounts are made and before pivot_root, with the host's root still visible (checked with runc 1.1.5).</summary>
public sealed class HooksSpec
{
    public List<HookSpec>? Prestart { get; set; }
    public List<HookSpec>? CreateRuntime { get; set; }
    public List<HookSpec>? CreateContainer { get; set; }
    public List<HookSpec>? StartContainer { get; set; }
    public List<HookSpec>? Poststart { get; set; }
    public List<HookSpec>? Poststop { get; set; }
}

public sealed class HookSpec
{
    /// <summary>Absolute path of the program, resolved in the runtime's namespace.</summary>
    public required string Path { get; set; }
    /// <summary>argv, including argv[0].</summary>
    public List<string>? Args { get; set; }
    public List<string>? Env { get; set; }
    public int? Timeout { get; set; }
}
