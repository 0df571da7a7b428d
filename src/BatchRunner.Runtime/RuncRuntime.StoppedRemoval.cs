using BatchRunner.Runtime.Spec;

namespace BatchRunner.Runtime;

public sealed partial class RuncRuntime
{
    /// <summary>The one file runc (1.1) keeps in its state directory <c>ROOT/ID</c> once the container has started.</summary>
    internal const string StateFile = "state.json";

    /// <summary>
    /// Removes a container whose init has exited and been reaped by us without a runc process: what runc 1.1's
    /// `delete` does for a stopped container (its destroy: SIGKILL to what is left in the cgroups, their removal, the state
    /// directory's removal, then the poststop hooks), here the cgroups' removal by <see cref="Cleaner"/> (which also kills
    /// and waits for anything left in them) and then the state file's and directory's. A `runc delete` costs about 7 ms
    /// of wall time and of CPU per job here, nearly all of it the Go runtime's start (measured 2026-11-30, runc 1.1.5).
    /// Returns false, having changed nothing but the cgroups, where the runtime's own `delete` must do it: another runtime
    /// than runc (its state is its own), poststop hooks in the spec, or a state directory holding anything but
    /// <see cref="StateFile"/>. The order is the guarantee: the state goes last, so a crash in between leaves a
    /// container that `list` still shows and the janitor's `delete` finishes; an <see cref="IOException"/> (a cgroup still
    /// busy) leaves the state too.
    /// </summary>
    internal async Task<bool> TryRemoveStoppedAsync(string id, bool hasPoststopHooks)
    {
        if (_options.Name != "runc" || hasPoststopHooks) return false;
        var stateDir = Path.Combine(_options.StateRoot, id);
        await Cleaner.RemoveAsync(SpecBuilder.CgroupParent, id, _options.KillTimeout, CancellationToken.None);
        if (Directory.Exists(stateDir))
        {
            foreach (var entry in Directory.EnumerateFileSystemEntries(stateDir))
                if (Path.GetFileName(entry) != StateFile) return false;
            File.Delete(Path.Combine(stateDir, StateFile));
            Directory.Delete(stateDir, recursive: false);
        }
        _logger.Deleted(id);
        return true;
    }
}
