using System.Diagnostics;

namespace BatchRunner.Runtime.Tests;

/// <summary>The worker is a child subreaper, so it adopts orphans that are not containers; they must not pile up as zombies.</summary>
/// <remarks>Alone, never beside another test class: two scans back to back reap any unclaimed zombie child of the test
/// process, and a container another test starts is such a child for a moment (after `runc run --detach` exits, before
/// its ChildExit claims it). The clean-clone run at daa4f33 lost GpuInjectionFacts' container that way ("is not a child
/// of this process"). A real node's scans are 30 s apart (OrphanReaper.Interval), far longer than that moment.</remarks>
[Collection(Name)]
public sealed class OrphanReaperFacts
{
    public const string Name = "orphan reaper, alone";

    [Fact]
    public async Task AnAdoptedOrphan_IsReaped_AfterItWasAZombieForOneScan()
    {
        BatchRunner.Native.Libc.BecomeChildSubreaper(); // what the runtime does before its first container
        // sh starts a short sleep in the background and exits: the sleep is orphaned and adopted by us.
        var psi = new ProcessStartInfo("/bin/sh", ["-c", "sleep 0.2 & echo $!"]) { RedirectStandardOutput = true };
        using var sh = Process.Start(psi)!;
        var orphan = int.Parse((await sh.StandardOutput.ReadLineAsync())!.Trim());
        await sh.WaitForExitAsync();

        await BatchRunner.Testing.Poll.UntilAsync(() => State(orphan) == "Z " + Environment.ProcessId, TimeSpan.FromSeconds(10), "the orphan, exited, as our zombie");
        OrphanReaper.Scan(); // first sighting: .NET might still be about to reap a child of its own
        Assert.Equal("Z " + Environment.ProcessId, State(orphan));
        OrphanReaper.Scan(); // a zombie for a whole scan interval: an orphan no one else waits for
        Assert.Null(State(orphan));
    }

    [Fact]
    public async Task AClaimedChild_IsNeverReaped_UntilItsOwnerReleasesIt()
    {
        BatchRunner.Native.Libc.BecomeChildSubreaper();
        var psi = new ProcessStartInfo("/bin/sh", ["-c", "sleep 0.2 & echo $!"]) { RedirectStandardOutput = true };
        using var sh = Process.Start(psi)!;
        var child = int.Parse((await sh.StandardOutput.ReadLineAsync())!.Trim());
        await sh.WaitForExitAsync();
        var claim = OwnedChildren.Claim(child); // as the embedded PostgreSQL claims its postmaster

        await BatchRunner.Testing.Poll.UntilAsync(() => State(child) == "Z " + Environment.ProcessId, TimeSpan.FromSeconds(10), "the child, exited, as our zombie");
        OrphanReaper.Scan();
        OrphanReaper.Scan();
        Assert.Equal("Z " + Environment.ProcessId, State(child)); // its exit status is still there for its owner

        claim.Dispose();
        OrphanReaper.Scan();
        OrphanReaper.Scan();
        Assert.Null(State(child));
    }

    private static string? State(int pid) => ProcStat.Read(pid) is var (state, ppid) ? $"{state} {ppid}" : null;
}

[CollectionDefinition(OrphanReaperFacts.Name, DisableParallelization = true)]
public sealed class OrphanReaperCollection;
