using BatchRunner.Native;

namespace BatchRunner.Runtime.Tests;

/// <summary>
/// Watching a child (the `run --detach` process, a container's init) starts no thread: one waiter polls the pidfds of all of
/// them (<see cref="ChildWaiter"/>), because a thread's start is on the launch's path. Each exit status still arrives, once.
/// </summary>
public sealed class ChildExitFacts
{
    private static int Threads() => Directory.GetDirectories("/proc/self/task").Length;

    [Fact]
    public async Task Watch_StartsNoThreadPerChild_AndReportsEachExit()
    {
        await ChildExit.Watch(Libc.Spawn("/bin/true", ["/bin/true"], [], [])).Task.WaitAsync(TimeSpan.FromSeconds(10)); // the waiter itself
        var before = Threads();
        var children = Enumerable.Range(0, 16)
            .Select(i => ChildExit.Watch(Libc.Spawn("/bin/sh", ["/bin/sh", "-c", $"sleep 0.5; exit {i}"], [], [])))
            .ToList();
        // 16 waiting children: a thread each would be 16 more (the thread pool may add a few of its own).
        Assert.InRange(Threads() - before, int.MinValue, 4);
        var exits = await Task.WhenAll(children.Select(c => c.Task.WaitAsync(TimeSpan.FromSeconds(10))));
        Assert.Equal(Enumerable.Range(0, 16).Select(i => (i, (int?)null)), exits);
        Assert.All(children, c => Assert.False(ChildExit.IsWatched(c.Pid)));
    }
}
