using System.Runtime.InteropServices;
using System.Text.Json.Nodes;

namespace BatchRunner.Runtime.Spec;

/// <summary>
/// BatchRunner's default seccomp profile: a <b>denylist</b> over the native architecture.
/// </summary>
/// <remarks>
/// Docker's default profile is an allowlist of ~370 syscalls; it is long and must follow every new
/// kernel. BatchRunner instead allows everything except what container engines block by default
/// because it reaches the kernel's privileged or poorly isolated surfaces: mounting and pivoting,
/// namespaces (unshare, setns, clone/clone3 with CLONE_NEW* flags — the door to unprivileged user
/// namespaces, where a job would regain capabilities), kernel modules and kexec, BPF, the kernel
/// keyring, ptrace and cross-process memory access, perf events, userfaultfd, io_uring, clock and
/// time setting, swap, reboot, accounting, quotas, raw I/O ports, file-handle syscalls
/// (open_by_handle_at, the "shocker" escape), personality flags that turn ASLR off or make data executable, and
/// AF_VSOCK sockets. Blocked calls fail with EPERM (clone3 with ENOSYS, so that libc falls back to
/// clone, which is then filtered by its flags).
///
/// A denylist is only sound when no other system-call table can be reached: the profile lists the
/// native architecture alone, so a 32-bit (int 0x80) or x32 call hits libseccomp's bad-architecture
/// action and kills the thread. Most of these calls would also fail for lack of capabilities; the
/// profile is the second wall, and the only one for the calls that need none (unshare(CLONE_NEWUSER),
/// userfaultfd, io_uring, keyctl, personality).
/// </remarks>
public static class SeccompProfiles
{
    private const int EPERM = 1;
    private const int ENOSYS = 38;

    /// <summary>Syscalls that always fail with EPERM.</summary>
    public static readonly IReadOnlyList<string> Denied =
    [
        // mounts and root switching
        "mount", "umount", "umount2", "pivot_root", "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
        // namespaces
        "unshare", "setns",
        // kernel code, kexec, BPF, modules
        "kexec_load", "kexec_file_load", "bpf", "init_module", "finit_module", "delete_module", "create_module", "get_kernel_syms", "query_module",
        // keyring
        "keyctl", "add_key", "request_key",
        // other processes' memory
        "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
        // kernel surfaces with a history of escapes
        "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register", "lookup_dcookie", "fanotify_init",
        "open_by_handle_at", "name_to_handle_at",
        // host-wide state
        "settimeofday", "clock_settime", "clock_adjtime", "stime", "swapon", "swapoff", "reboot", "acct", "quotactl", "quotactl_fd",
        "syslog", "sethostname", "setdomainname", "vhangup", "nfsservctl", "uselib", "_sysctl", "iopl", "ioperm",
    ];

    /// <summary>clone flags that create namespaces (NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME).</summary>
    public static readonly IReadOnlyList<ulong> NamespaceCloneFlags =
        [0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000, 0x00000080];

    /// <summary>personality() flags that weaken the address space: ADDR_NO_RANDOMIZE, MMAP_PAGE_ZERO,
    /// ADDR_COMPAT_LAYOUT, READ_IMPLIES_EXEC. Setting any of them is refused; the query (0xffffffff) and
    /// other personas (PER_LINUX32, UNAME26, ...) are allowed.</summary>
    public static readonly IReadOnlyList<ulong> DeniedPersonalityFlags = [0x0040000, 0x0100000, 0x0200000, 0x0400000];

    private const int AF_VSOCK = 40;

    /// <summary>The default profile, built once and shared by every container's spec; never changed once built (a spec
    /// that wants another profile sets its own object: <see cref="SpecOpts.WithSeccomp"/>).</summary>
    /// <remarks>Building it (about 140 rules) and writing it node by node took a visible part of a trivial job's CPU; a
    /// spec holding this instance is written with <see cref="SharedJson"/> instead (<see cref="SeccompJsonConverter"/>).</remarks>
    internal static JsonObject Shared { get; } = Default();

    /// <summary><see cref="Shared"/> as compact UTF-8 JSON, as <see cref="RuntimeSpec.ToJson"/> writes a profile.</summary>
    internal static byte[] SharedJson { get; } = System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(Shared);

    /// <summary>A new copy of the default profile.</summary>
    public static JsonObject Default()
    {
        var syscalls = new JsonArray
        {
            Rule(Denied, EPERM),
            Rule(["clone3"], ENOSYS),
        };
        // x86_64 and arm64 pass clone's flags in argument 0; s390 differs (not a BatchRunner target).
        foreach (var flag in NamespaceCloneFlags)
            syscalls.Add(Rule(["clone"], EPERM, Arg(0, "SCMP_CMP_MASKED_EQ", flag, flag)));
        // runc turns several comparisons of one argument into separate (OR-ed) rules, so "not one of the
        // allowed values" cannot be written in a denylist. Instead, for each dangerous flag F and each bit B
        // of the low 32: refuse when F is set and B is clear. Every value with F set except the query
        // 0xffffffff (all bits set; the kernel reads only 32 bits) has some clear bit, so it is refused.
        foreach (var flag in DeniedPersonalityFlags)
            for (var bit = 0; bit < 32; bit++)
                if ((1UL << bit) != flag)
                    syscalls.Add(Rule(["personality"], EPERM, Arg(0, "SCMP_CMP_MASKED_EQ", flag | (1UL << bit), flag)));
        syscalls.Add(Rule(["socket"], EPERM, Arg(0, "SCMP_CMP_EQ", AF_VSOCK)));

        return new JsonObject
        {
            ["defaultAction"] = "SCMP_ACT_ALLOW",
            ["architectures"] = new JsonArray(NativeArchitectures().Select(a => (JsonNode)a).ToArray()),
            ["syscalls"] = syscalls,
        };
    }

    private static IEnumerable<string> NativeArchitectures() => RuntimeInformation.ProcessArchitecture switch
    {
        Architecture.X64 => ["SCMP_ARCH_X86_64"],
        Architecture.Arm64 => ["SCMP_ARCH_AARCH64"],
        var a => throw new PlatformNotSupportedException($"no seccomp profile for {a}"),
    };

    private static JsonObject Rule(IEnumerable<string> names, int errno, params JsonObject[] args)
    {
        var rule = new JsonObject
        {
            ["names"] = new JsonArray(names.Select(n => (JsonNode)n).ToArray()),
            ["action"] = "SCMP_ACT_ERRNO",
            ["errnoRet"] = errno,
        };
        if (args.Length > 0) rule["args"] = new JsonArray(args);
        return rule;
    }

    private static JsonObject Arg(uint index, string op, ulong value, ulong valueTwo = 0) => new()
    {
        ["index"] = index,
        ["value"] = value,
        ["valueTwo"] = valueTwo,
        ["op"] = op,
    };
}

/// <summary>Writes <see cref="SeccompProfiles.Shared"/> as its bytes made once, any other profile node by node.</summary>
internal sealed class SeccompJsonConverter : System.Text.Json.Serialization.JsonConverter<JsonObject>
{
    public override JsonObject? Read(ref System.Text.Json.Utf8JsonReader reader, Type typeToConvert, System.Text.Json.JsonSerializerOptions options) =>
        JsonNode.Parse(ref reader)?.AsObject();

    public override void Write(System.Text.Json.Utf8JsonWriter writer, JsonObject value, System.Text.Json.JsonSerializerOptions options)
    {
        if (ReferenceEquals(value, SeccompProfiles.Shared)) writer.WriteRawValue(SeccompProfiles.SharedJson, skipInputValidation: true);
        else value.WriteTo(writer, options);
    }
}
