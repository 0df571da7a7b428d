using BatchRunner.Core;
using BatchRunner.Runtime.Gpus;
using BatchRunner.Server.Scheduling;
using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Tests.Scheduling;

public sealed class NodeReservationsFacts
{
    internal static Gpu G(int index, string model = "NVIDIA H100 80GB HBM3") =>
        new(index, $"GPU-{index}", model, 80L << 30, null, null,
            new GpuContainerEdits { DeviceNodes = [new GpuDeviceNode($"/dev/nvidia{index}")] });

    private static NodeReservations Node(double cpus = 4, long memoryBytes = 8L << 30, params Gpu[] gpus) =>
        new("reservations-" + Guid.NewGuid().ToString("N")[..6], new NodeCapacity(cpus, memoryBytes, 0), gpus);

    private static ResourceRequest R(double cpus = 0.1, long memoryBytes = 1L << 20, int gpus = 0, string? model = null) =>
        new() { Cpus = cpus, MemoryBytes = memoryBytes, Pids = 64, Gpus = gpus, GpuModel = model };

    [Fact]
    public void TryReserve_GivesDifferentGpus_ThenNull_ThenSucceedsAfterRelease()
    {
        var node = Node(gpus: [G(0), G(1)]);
        Guid a = Guid.NewGuid(), b = Guid.NewGuid(), c = Guid.NewGuid();

        var ga = Assert.Single(node.TryReserve(a, R(gpus: 1))!.Gpus);
        var gb = Assert.Single(node.TryReserve(b, R(gpus: 1))!.Gpus);
        Assert.NotEqual(ga.Uuid, gb.Uuid);
        Assert.Null(node.TryReserve(c, R(gpus: 1)));
        Assert.Equal(0, node.FreeGpus());

        Assert.True(node.Release(a));
        Assert.False(node.Release(a)); // idempotent
        Assert.Equal(ga.Uuid, Assert.Single(node.TryReserve(c, R(gpus: 1))!.Gpus).Uuid);
        Assert.Equal(new Dictionary<string, Guid> { [gb.Uuid] = b, [ga.Uuid] = c }, node.GpuAssignments());
    }

    [Fact]
    public void TryReserve_TakesNothing_WhenOneResourceIsShort()
    {
        var node = Node(cpus: 2, memoryBytes: 1L << 30, gpus: [G(0)]);
        Assert.NotNull(node.TryReserve(Guid.NewGuid(), R(cpus: 1.5, memoryBytes: 256L << 20, gpus: 1)));
        // CPUs fit, memory fits, the GPU does not: no CPU or memory is held for it either.
        Assert.Null(node.TryReserve(Guid.NewGuid(), R(cpus: 0.5, memoryBytes: 256L << 20, gpus: 1)));
        Assert.Null(node.TryReserve(Guid.NewGuid(), R(cpus: 0.6)));
        Assert.Null(node.TryReserve(Guid.NewGuid(), R(memoryBytes: 1L << 30)));
        Assert.Equal(new ResourceAmounts(1.5, 256L << 20, 1), node.Allocated);
        Assert.Single(node.Jobs);
    }

    [Fact]
    public void TryReserve_AddsCpuFractionsWithoutFalseRefusals()
    {
        var node = Node(cpus: 0.3);
        Assert.NotNull(node.TryReserve(Guid.NewGuid(), R(cpus: 0.1)));
        Assert.NotNull(node.TryReserve(Guid.NewGuid(), R(cpus: 0.2))); // 0.1 + 0.2 > 0.3 in binary floating point
        Assert.Null(node.TryReserve(Guid.NewGuid(), R(cpus: 0.01)));
    }

    [Fact]
    public void TryReserve_MatchesGpuModelCaseInsensitively_BySubstring()
    {
        var node = Node(gpus: [G(0, "Tesla T4"), G(1, "NVIDIA H100 80GB HBM3")]);
        Assert.Equal(1, Assert.Single(node.TryReserve(Guid.NewGuid(), R(gpus: 1, model: "h100"))!.Gpus).Index);
        Assert.Null(node.TryReserve(Guid.NewGuid(), R(gpus: 1, model: "H100")));
        Assert.Equal(0, Assert.Single(node.TryReserve(Guid.NewGuid(), R(gpus: 1))!.Gpus).Index);
        Assert.Equal(2, node.Capacity.Gpus);
        Assert.Equal(["Tesla T4", "NVIDIA H100 80GB HBM3"], node.Capacity.GpuModels);
    }

    [Fact]
    public void TryReserve_ReturnsTheSameReservation_WhenAJobAsksAgain()
    {
        var node = Node(gpus: [G(0), G(1)]);
        var job = Guid.NewGuid();
        var first = node.TryReserve(job, R(gpus: 1))!;
        Assert.Same(first, node.TryReserve(job, R(gpus: 1)));
        Assert.Equal(1, node.FreeGpus());
        Assert.Empty(node.TryReserve(Guid.NewGuid(), R())!.Gpus);
    }

    [Fact]
    public async Task Release_PublishesTheAllocation_AndWakesAWaiter()
    {
        var node = Node(cpus: 1);
        var job = Guid.NewGuid();
        node.TryReserve(job, R(cpus: 1, memoryBytes: 64L << 20));
        Assert.Equal(1, BatchRunner.Server.Observability.NodeMetrics.AllocatedCpus.WithLabels(node.NodeName).Value);
        Assert.Equal(64L << 20, BatchRunner.Server.Observability.NodeMetrics.AllocatedMemoryBytes.WithLabels(node.NodeName).Value);
        var waiting = node.WaitForReleaseAsync(TimeSpan.FromMinutes(1), CancellationToken.None);
        Assert.False(waiting.IsCompleted);
        node.Release(job);
        await waiting.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(0, BatchRunner.Server.Observability.NodeMetrics.AllocatedCpus.WithLabels(node.NodeName).Value);
        Assert.Equal(1, BatchRunner.Server.Observability.NodeMetrics.CapacityCpus.WithLabels(node.NodeName).Value);
    }

    [Fact]
    public async Task TryReserve_NeverHandsOneGpuToTwoJobs_UnderConcurrency()
    {
        var node = Node(cpus: 1000, memoryBytes: 1L << 40, gpus: [G(0), G(1), G(2), G(3)]);
        var holders = new System.Collections.Concurrent.ConcurrentDictionary<string, int>();
        var violations = 0;
        await Parallel.ForAsync(0, 2000, async (i, ct) =>
        {
            var job = Guid.NewGuid();
            if (node.TryReserve(job, R(gpus: 1 + i % 2)) is not { } held) return;
            foreach (var g in held.Gpus) if (holders.AddOrUpdate(g.Uuid, 1, (_, n) => n + 1) > 1) Interlocked.Increment(ref violations);
            await Task.Yield();
            foreach (var g in held.Gpus) holders.AddOrUpdate(g.Uuid, 0, (_, n) => n - 1);
            node.Release(job);
        });
        Assert.Equal(0, violations);
        Assert.Equal(4, node.FreeGpus());
        Assert.Equal(ResourceAmounts.Zero, node.Allocated);
    }
}
