namespace BatchRunner.Server.Execution.Phases;

/// <summary>
/// One step of an attempt that owns one resource, like a hook of Nomad's task runner: it acquires the resource
/// (or observes what the steps before it made), and releases it. <see cref="AttemptRunner"/> runs the phases in
/// order and releases the ones it started in reverse order, on every path. A new step of an attempt (a disk
/// quota, fetching inputs, a dependency's outputs) is a new phase, not a new branch in the runner.
/// </summary>
/// <remarks>
/// Phases are singletons: per-attempt state lives in the <see cref="AttemptContext"/>. A phase that throws ends
/// the attempt as an internal error (a database outage propagates: the job is delivered again); a phase that
/// cannot go on for a reason the job's owner should read returns the <see cref="AttemptResult"/> to end with.
/// </remarks>
public interface IAttemptPhase
{
    /// <summary>Acquires the phase's resource into <paramref name="attempt"/>. Null: go on with the next phase;
    /// a result: the attempt ends with it (a pull failure, a refused start, a stop before the container ran).</summary>
    Task<AttemptResult?> RunAsync(AttemptContext attempt);

    /// <summary>Releases what <see cref="RunAsync"/> acquired, also when it threw half-way or returned a result; called
    /// once per attempt whose <see cref="RunAsync"/> was called. Errors are logged by the runner and do not change the
    /// attempt's end; a crash before it runs is covered by the node janitor at the next start.</summary>
    ValueTask ReleaseAsync(AttemptContext attempt);
}
