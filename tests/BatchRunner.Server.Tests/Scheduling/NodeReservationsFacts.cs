using BatchRunner.Runtime.Gpus;
using BatchRunner.Server.Gpus;

namespace BatchRunner.Server.Tests.Gpus;

public sealed class GpuAllocatorFacts
{
    internal static Gpu G(int index, string model = "NVIDIA H100 80GB HBM3") =>
        new(index, $"GPU-{index}", model, 80L << 30, null, null,
            new GpuContainerEdits { DeviceNodes = [new GpuDeviceNode($"/dev/nvidia{index}")] });

    [Fact]
    public void TryAllocate_GivesDifferentGpus_ThenNull_ThenSucceedsAfterRelease()
    {
        var alloc = new GpuAllocator([G(0), G(1)]);
        Guid a = Guid.NewGuid(), b = Guid.NewGuid(), c = Guid.NewGuid();

        var ga = Assert.Single(alloc.TryAllocate(a, 1)!);
        var gb = Assert.Single(alloc.TryAllocate(b, 1)!);
        Assert.NotEqual(ga.Uuid, gb.Uuid);
        Assert.Null(alloc.TryAllocate(c, 1));
        Assert.Equal(0, alloc.FreeCount());

        var released = 0;
        alloc.Released += () => released++;
        Assert.True(alloc.Release(a));
        Assert.False(alloc.Release(a)); // idempotent
        Assert.Equal(1, released);
        Assert.Equal(ga.Uuid, Assert.Single(alloc.TryAllocate(c, 1)!).Uuid);
        Assert.Equal(new Dictionary<string, Guid> { [gb.Uuid] = b, [ga.Uuid] = c }, alloc.Assignments());
    }

    [Fact]
    public void TryAllocate_ReturnsNull_WhenNotEnoughFree_AndTakesNothing()
    {
        var alloc = new GpuAllocator([G(0), G(1)]);
        Assert.Single(alloc.TryAllocate(Guid.NewGuid(), 1)!);
        Assert.Null(alloc.TryAllocate(Guid.NewGuid(), 2));
        Assert.Equal(1, alloc.FreeCount());
    }

    [Fact]
    public void TryAllocate_MatchesModelCaseInsensitively_BySubstring()
    {
        var alloc = new GpuAllocator([G(0, "Tesla T4"), G(1, "NVIDIA H100 80GB HBM3")]);
        Assert.Equal(1, Assert.Single(alloc.TryAllocate(Guid.NewGuid(), 1, "h100")!).Index);
        Assert.Null(alloc.TryAllocate(Guid.NewGuid(), 1, "H100"));
        Assert.Equal(0, Assert.Single(alloc.TryAllocate(Guid.NewGuid(), 1)!).Index);
        Assert.True(alloc.CanEverFit(1, "H100"));
        Assert.False(alloc.CanEverFit(2, "H100"));
        Assert.False(alloc.CanEverFit(3, null));
        Assert.Equal(new Dictionary<string, int> { ["NVIDIA H100 80GB HBM3"] = 1, ["Tesla T4"] = 1 }, alloc.Capacity.Models);
    }

    [Fact]
    public void TryAllocate_IsIdempotentPerJob_AndZeroRecordsNothing()
    {
        var alloc = new GpuAllocator([G(0), G(1)]);
        var job = Guid.NewGuid();
        Assert.Empty(alloc.TryAllocate(job, 0)!);
        Assert.Equal(2, alloc.FreeCount());
        var first = alloc.TryAllocate(job, 1)!;
        Assert.Same(first, alloc.TryAllocate(job, 1));
        Assert.Throws<InvalidOperationException>(() => alloc.TryAllocate(job, 2));
        Assert.Equal(first, alloc.AssignedTo(job));
    }

    [Fact]
    public async Task TryAllocate_NeverHandsOneGpuToTwoJobs_UnderConcurrency()
    {
        var alloc = new GpuAllocator([G(0), G(1), G(2), G(3)]);
        var holders = new System.Collections.Concurrent.ConcurrentDictionary<string, int>();
        var violations = 0;
        await Parallel.ForAsync(0, 2000, async (i, ct) =>
        {
            var job = Guid.NewGuid();
            if (alloc.TryAllocate(job, 1 + i % 2) is not { } gpus) return;
            foreach (var g in gpus) if (holders.AddOrUpdate(g.Uuid, 1, (_, n) => n + 1) > 1) Interlocked.Increment(ref violations);
            await Task.Yield();
            foreach (var g in gpus) holders.AddOrUpdate(g.Uuid, 0, (_, n) => n - 1);
            alloc.Release(job);
        });
        Assert.Equal(0, violations);
        Assert.Equal(4, alloc.FreeCount());
    }
}
