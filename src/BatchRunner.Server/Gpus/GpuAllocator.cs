using BatchRunner.Runtime.Gpus;

namespace BatchRunner.Server.Gpus;

/// <summary>
/// Hands each GPU of this node to at most one running job. Plain in-memory state, thread-safe: the node's
/// assignments live only as long as the worker process, which is right because a crashed worker's containers
/// are killed by the orphan clean-up at start-up, so a fresh process starts with every GPU free.
/// </summary>
/// <remarks>
/// Lifecycle: <see cref="TryAllocate"/> before the container starts (null: not enough free GPUs now, the job
/// waits); <see cref="Release"/> after the container is gone, on every exit path. Release is idempotent, so a
/// <c>finally</c> may call it whatever happened.
/// </remarks>
public sealed class GpuAllocator
{
    private readonly Lock _lock = new();
    private readonly Dictionary<Guid, IReadOnlyList<Gpu>> _byJob = [];
    private readonly Dictionary<string, Guid> _byUuid = new(StringComparer.Ordinal);

    public GpuAllocator(IReadOnlyList<Gpu> gpus)
    {
        if (gpus.Select(g => g.Uuid).Distinct(StringComparer.Ordinal).Count() != gpus.Count)
            throw new ArgumentException("GPU UUIDs must be unique", nameof(gpus));
        Gpus = gpus.OrderBy(g => g.Index).ToList();
        Capacity = GpuCapacity.Of(Gpus);
    }

    /// <summary>Every GPU of the node, by index.</summary>
    public IReadOnlyList<Gpu> Gpus { get; }

    /// <summary>Count, models and memory: for the node record, /healthz and admission.</summary>
    public GpuCapacity Capacity { get; }

    /// <summary>Raised (outside the lock) after a release freed GPUs: a job waiting for GPUs may now fit.</summary>
    public event Action? Released;

    /// <summary>True when this node could ever run a job asking for <paramref name="count"/> GPUs of <paramref name="model"/> (all of them free).</summary>
    public bool CanEverFit(int count, string? model) => count <= Gpus.Count(g => GpuCapacity.ModelMatches(g.Model, model));

    /// <summary>
    /// Assigns <paramref name="count"/> free GPUs whose model contains <paramref name="model"/> (lowest index
    /// first) to <paramref name="jobId"/>; null when not enough are free now. Count 0 gives an empty list and
    /// records nothing. Asking again for a job that holds GPUs returns its assignment (a retried admission),
    /// unless the count differs, which is a bug in the caller.
    /// </summary>
    public IReadOnlyList<Gpu>? TryAllocate(Guid jobId, int count, string? model = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        if (count == 0) return [];
        lock (_lock)
        {
            if (_byJob.TryGetValue(jobId, out var held))
                return held.Count == count ? held : throw new InvalidOperationException($"job {jobId} already holds {held.Count} GPU(s), asked for {count}");
            var free = Gpus.Where(g => !_byUuid.ContainsKey(g.Uuid) && GpuCapacity.ModelMatches(g.Model, model)).Take(count).ToList();
            if (free.Count < count) return null;
            _byJob[jobId] = free;
            foreach (var g in free) _byUuid[g.Uuid] = jobId;
            return free;
        }
    }

    /// <summary>Frees the job's GPUs. Idempotent; false when the job held none.</summary>
    public bool Release(Guid jobId)
    {
        lock (_lock)
        {
            if (!_byJob.Remove(jobId, out var held)) return false;
            foreach (var g in held) _byUuid.Remove(g.Uuid);
        }
        Released?.Invoke();
        return true;
    }

    /// <summary>GPUs free now, optionally of one model.</summary>
    public int FreeCount(string? model = null)
    {
        lock (_lock) return Gpus.Count(g => !_byUuid.ContainsKey(g.Uuid) && GpuCapacity.ModelMatches(g.Model, model));
    }

    /// <summary>The GPUs a job holds (empty when none).</summary>
    public IReadOnlyList<Gpu> AssignedTo(Guid jobId)
    {
        lock (_lock) return _byJob.TryGetValue(jobId, out var held) ? held : [];
    }

    /// <summary>Current assignments, GPU UUID → job.</summary>
    public IReadOnlyDictionary<string, Guid> Assignments()
    {
        lock (_lock) return new Dictionary<string, Guid>(_byUuid, StringComparer.Ordinal);
    }
}
