using System.Runtime.InteropServices;

namespace BatchRunner.Native;

/// <summary>posix_spawn(3) with file actions, for the runtime's launcher (Runtime's RuncRuntime).</summary>
internal static unsafe partial class Libc
{
    private const short POSIX_SPAWN_SETSIGDEF = 0x04, POSIX_SPAWN_SETSIGMASK = 0x08;
    // glibc's posix_spawn_file_actions_t is 80 bytes, posix_spawnattr_t 336 and sigset_t 128 on 64-bit Linux (musl's are
    // smaller): each is given this much, zeroed, so that no libc's layout can overrun it.
    private const int OpaqueBytes = 1024;

    [LibraryImport("libc")]
    private static partial int posix_spawn_file_actions_init(void* actions);

    [LibraryImport("libc", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int posix_spawn_file_actions_addopen(void* actions, int fd, string path, int flags, uint mode);

    [LibraryImport("libc")]
    private static partial int posix_spawn_file_actions_destroy(void* actions);

    [LibraryImport("libc")]
    private static partial int posix_spawnattr_init(void* attr);

    [LibraryImport("libc")]
    private static partial int posix_spawnattr_setflags(void* attr, short flags);

    [LibraryImport("libc")]
    private static partial int posix_spawnattr_setsigdefault(void* attr, void* signals);

    [LibraryImport("libc")]
    private static partial int posix_spawnattr_setsigmask(void* attr, void* signals);

    [LibraryImport("libc")]
    private static partial int posix_spawnattr_destroy(void* attr);

    [LibraryImport("libc")]
    private static partial int sigfillset(void* set);

    [LibraryImport("libc")]
    private static partial int sigemptyset(void* set);

    [LibraryImport("libc")]
    private static partial int posix_spawn(int* pid, byte* path, void* actions, void* attr, byte** argv, byte** envp);

    /// <summary>One file the child opens as one of its descriptors before it executes the program.</summary>
    public readonly record struct SpawnOpen(int Fd, string Path, int Flags);

    /// <summary>
    /// Starts <paramref name="path"/> (absolute) with <paramref name="argv"/> and <paramref name="env"/> ("NAME=value"),
    /// after the child has opened <paramref name="opens"/> as the descriptors they name: those files are opened in the
    /// child only, never in this process. Every signal starts at its default disposition and unblocked, as in a fresh
    /// process. Other descriptors are inherited as they are (this process opens its own close-on-exec). Returns the
    /// child's pid; the caller reaps it (waitpid).
    /// </summary>
    /// <exception cref="IOException">The child could not be started (the program is missing, an open failed).</exception>
    public static int Spawn(string path, IReadOnlyList<string> argv, IReadOnlyList<string> env, IReadOnlyList<SpawnOpen> opens)
    {
        var actions = NativeMemory.AllocZeroed(OpaqueBytes);
        var attr = NativeMemory.AllocZeroed(OpaqueBytes);
        var signals = NativeMemory.AllocZeroed(OpaqueBytes);
        var strings = new List<nint>(argv.Count + env.Count + 1);
        byte** argvp = null, envp = null;
        var actionsReady = false;
        var attrReady = false;
        try
        {
            Check(posix_spawn_file_actions_init(actions), "posix_spawn_file_actions_init");
            actionsReady = true;
            foreach (var o in opens)
                Check(posix_spawn_file_actions_addopen(actions, o.Fd, o.Path, o.Flags, 0), $"posix_spawn_file_actions_addopen {o.Path}");
            Check(posix_spawnattr_init(attr), "posix_spawnattr_init");
            attrReady = true;
            sigfillset(signals);
            // sigfillset leaves out the C library's own signals (glibc's 32 and 33), which its posix_spawn then sets to
            // SIG_IGN in the child, and an ignored signal survives exec into the container. The kernel's layout (bit N-1
            // for signal N) lets all of 1..64 be named: the child gets every one at SIG_DFL, as .NET's Process gave it.
            *(ulong*)signals = ulong.MaxValue;
            Check(posix_spawnattr_setsigdefault(attr, signals), "posix_spawnattr_setsigdefault");
            sigemptyset(signals);
            Check(posix_spawnattr_setsigmask(attr, signals), "posix_spawnattr_setsigmask");
            Check(posix_spawnattr_setflags(attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK), "posix_spawnattr_setflags");

            byte* Utf8(string s)
            {
                var p = Marshal.StringToCoTaskMemUTF8(s);
                strings.Add(p);
                return (byte*)p;
            }
            byte** Array(IReadOnlyList<string> items)
            {
                var a = (byte**)NativeMemory.AllocZeroed((nuint)(items.Count + 1), (nuint)sizeof(byte*));
                for (var i = 0; i < items.Count; i++) a[i] = Utf8(items[i]);
                return a;
            }
            argvp = Array(argv);
            envp = Array(env);
            int pid;
            var error = posix_spawn(&pid, Utf8(path), actions, attr, argvp, envp);
            if (error != 0) throw new IOException($"starting {path} failed: {Describe(error)}");
            return pid;
        }
        finally
        {
            if (actionsReady) posix_spawn_file_actions_destroy(actions);
            if (attrReady) posix_spawnattr_destroy(attr);
            NativeMemory.Free(actions);
            NativeMemory.Free(attr);
            NativeMemory.Free(signals);
            NativeMemory.Free(argvp);
            NativeMemory.Free(envp);
            foreach (var p in strings) Marshal.FreeCoTaskMem(p);
        }
    }

    // posix_spawn's functions return the error number rather than setting errno.
    private static void Check(int error, string what)
    {
        if (error != 0) throw new IOException($"{what} failed: {Describe(error)}");
    }
}
