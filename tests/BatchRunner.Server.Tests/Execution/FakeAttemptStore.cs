using System.Collections.Concurrent;
using BatchRunner.Core;
using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Tests.Execution;

/// <summary>
/// The job store as one attempt uses it, in memory: enough of <see cref="JobStore"/>'s rules (a queued job gets the
/// next attempt; writes of an older attempt change nothing) for executor decision tests. <see cref="Writes"/> lists
/// every write in order, so a test can tell what was recorded, and that nothing was.
/// </summary>
internal sealed class FakeAttemptStore : IAttemptStore, IJobSecrets
{
    private readonly ConcurrentDictionary<Guid, JobRecord> _jobs = new();
    private readonly ConcurrentDictionary<Guid, JobSecrets> _secrets = new();
    private readonly ConcurrentQueue<string> _writes = new();
    private volatile bool _cancelRequested;
    private int _cancelChecks;

    /// <summary>"Begin 1", "Running 1", "Finish 1 failed timed_out", "Retry 1 failed exit_code 00:00:05", "Requeue 1", ...</summary>
    public IReadOnlyList<string> Writes => [.. _writes];

    /// <summary>Outcomes recorded by Finish and Retry, in order.</summary>
    public ConcurrentQueue<JobOutcome> Outcomes { get; } = new();

    /// <summary>Called as Finish or Retry records an outcome (before it returns): a test looks at what is still held then.</summary>
    public Action<JobOutcome>? OnRecord { get; set; }

    /// <summary>Attempts of the job already closed as node_lost, as the next begin reports them.</summary>
    public int LostAttempts { get; set; }

    /// <summary>When set, the next begin answers this instead of starting an attempt.</summary>
    public AttemptStart? NextBegin { get; set; }

    /// <summary>Stores the job as the API does: its secrets apart, the spec without their values.</summary>
    public void Add(JobRecord job)
    {
        _secrets[job.Id] = new JobSecrets(job.Spec.SecretEnv, job.Spec.Notify?.Secret);
        _jobs[job.Id] = job with { Spec = job.Spec with { SecretEnv = new Dictionary<string, string>() } };
    }

    Task<JobSecrets> IJobSecrets.GetAsync(Guid jobId, CancellationToken ct) =>
        Task.FromResult(_secrets.TryGetValue(jobId, out var s) ? s : JobSecretStore.Empty);

    public JobRecord Job(Guid id) => _jobs[id];

    /// <summary>What the API does on cancel: the flag the worker reads as a backstop.</summary>
    public void RequestCancel() => _cancelRequested = true;

    public Task<JobRecord?> GetForAttemptAsync(Guid id, CancellationToken ct) => Task.FromResult(_jobs.TryGetValue(id, out var j) ? j : null);

    public Task SetWaitReasonAsync(Guid id, string message, CancellationToken ct)
    {
        _writes.Enqueue($"Wait {message}");
        return Task.CompletedTask;
    }

    public Task<AttemptStart> BeginAttemptAsync(Guid id, string node, Guid instance, string queue, int? queueLimit, CancellationToken ct)
    {
        if (NextBegin is { } next)
        {
            NextBegin = null;
            return Task.FromResult(next);
        }
        var job = _jobs[id];
        if (job.State != JobState.Queued) return Task.FromResult<AttemptStart>(new AttemptStart.NothingToRun());
        var attempt = job.Attempt + 1;
        _jobs[id] = job with { Attempt = attempt, State = JobState.Starting, Node = node };
        _writes.Enqueue($"Begin {attempt}");
        return Task.FromResult<AttemptStart>(new AttemptStart.Started(attempt, LostAttempts));
    }

    public Task SetPullProgressAsync(Guid id, int attempt, long done, long total, CancellationToken ct) => Task.CompletedTask;

    public Task SetImageDigestAsync(Guid id, int attempt, string digest, CancellationToken ct)
    {
        if (Current(id, attempt)) _jobs[id] = _jobs[id] with { ImageDigest = digest };
        return Task.CompletedTask;
    }

    public Task<bool> MarkRunningAsync(Guid id, int attempt, DateTimeOffset startedAt, string? imageDigest, CancellationToken ct)
    {
        if (!Current(id, attempt) || _jobs[id].State != JobState.Starting) return Task.FromResult(false);
        _jobs[id] = _jobs[id] with { State = JobState.Running, StartedAt = startedAt, ImageDigest = imageDigest ?? _jobs[id].ImageDigest };
        _writes.Enqueue($"Running {attempt}");
        return Task.FromResult(true);
    }

    public Task MarkLogsTruncatedAsync(Guid id, int attempt, CancellationToken ct)
    {
        if (!Current(id, attempt) || _jobs[id].LogsTruncated) return Task.CompletedTask;
        _jobs[id] = _jobs[id] with { LogsTruncated = true };
        _writes.Enqueue($"LogsTruncated {attempt}");
        return Task.CompletedTask;
    }

    /// <summary>How often the worker read the cancel flag (it does when a stop signal fires).</summary>
    public int CancelChecks => Volatile.Read(ref _cancelChecks);

    /// <summary>While set, reading the cancel flag fails as it does while the database restarts.</summary>
    public bool DatabaseAway { get; set; }

    public Task<bool> IsCancelRequestedAsync(Guid id, CancellationToken ct)
    {
        Interlocked.Increment(ref _cancelChecks);
        if (DatabaseAway) throw new Npgsql.NpgsqlException("Failed to connect to /tmp/postgres-run/.s.PGSQL.5432");
        return Task.FromResult(_cancelRequested);
    }

    public Task<bool> RetryLaterAsync(Guid id, int attempt, JobOutcome outcome, TimeSpan delay, CancellationToken ct)
    {
        if (!Current(id, attempt) || _jobs[id].State is not (JobState.Starting or JobState.Running)) return Task.FromResult(false);
        _jobs[id] = _jobs[id] with { State = JobState.Queued };
        OnRecord?.Invoke(outcome);
        Outcomes.Enqueue(outcome);
        _writes.Enqueue($"Retry {attempt} {outcome.State} {outcome.Reason} {delay}");
        return Task.FromResult(true);
    }

    public Task<bool> FinishAsync(Guid id, int attempt, JobOutcome outcome, CancellationToken ct)
    {
        if (!Current(id, attempt) || JobState.IsFinal(_jobs[id].State)) return Task.FromResult(false);
        _jobs[id] = _jobs[id] with { State = outcome.State, Reason = outcome.Reason, Message = outcome.Message, ExitCode = outcome.ExitCode, Outputs = outcome.Outputs };
        OnRecord?.Invoke(outcome);
        Outcomes.Enqueue(outcome);
        _writes.Enqueue($"Finish {attempt} {outcome.State} {outcome.Reason}".TrimEnd());
        return Task.FromResult(true);
    }

    public Task RequeueAsync(Guid id, int attempt, string message, CancellationToken ct)
    {
        if (Current(id, attempt)) _jobs[id] = _jobs[id] with { State = JobState.Queued };
        _writes.Enqueue($"Requeue {attempt}");
        return Task.CompletedTask;
    }

    /// <summary>What <see cref="GetProducedOutputsAsync"/> answers, by producer.</summary>
    public Dictionary<Guid, IReadOnlyList<ProducedOutputs>> Produced { get; } = [];

    public Task<IReadOnlyList<ProducedOutputs>> GetProducedOutputsAsync(Guid producer, CancellationToken ct) =>
        Task.FromResult(Produced.TryGetValue(producer, out var p) ? p : (IReadOnlyList<ProducedOutputs>)[]);

    public Task<IReadOnlyList<JobStore.DependencyLink>> DependencyLinksAsync(Guid id, bool dependents, CancellationToken ct) =>
        Task.FromResult<IReadOnlyList<JobStore.DependencyLink>>([]);

    private bool Current(Guid id, int attempt) => _jobs[id].Attempt == attempt;
}
