using BatchRunner.Core;
using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Scheduling;

/// <summary>
/// This node's free capacity. A job is admitted only when its whole request fits (CPU, memory), so the
/// node never over-commits; the reservation is released on every exit path of the attempt.
/// </summary>
public sealed class NodeResources(NodeCapacity capacity)
{
    private readonly object _lock = new();
    private readonly Dictionary<Guid, ResourceRequest> _reserved = [];
    private TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public NodeCapacity Capacity { get; } = capacity;

    public (double Cpus, long MemoryBytes, int Jobs) Allocated
    {
        get
        {
            lock (_lock) return (_reserved.Values.Sum(r => r.Cpus), _reserved.Values.Sum(r => r.MemoryBytes), _reserved.Count);
        }
    }

    public IReadOnlyList<Guid> Jobs { get { lock (_lock) return _reserved.Keys.ToList(); } }

    public bool TryReserve(Guid jobId, ResourceRequest request)
    {
        lock (_lock)
        {
            if (_reserved.ContainsKey(jobId)) return true;
            var cpus = _reserved.Values.Sum(r => r.Cpus);
            var memory = _reserved.Values.Sum(r => r.MemoryBytes);
            if (cpus + request.Cpus > Capacity.Cpus + 1e-9 || memory + request.MemoryBytes > Capacity.MemoryBytes) return false;
            _reserved[jobId] = request;
            return true;
        }
    }

    public void Release(Guid jobId)
    {
        TaskCompletionSource changed;
        lock (_lock)
        {
            if (!_reserved.Remove(jobId)) return;
            changed = _changed;
            _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);
        }
        changed.TrySetResult();
    }

    /// <summary>Completes the next time a reservation is released (or when <paramref name="timeout"/> passes).</summary>
    public async Task WaitForReleaseAsync(TimeSpan timeout, CancellationToken ct)
    {
        Task changed;
        lock (_lock) changed = _changed.Task;
        await Task.WhenAny(changed, Task.Delay(timeout, ct));
    }
}
