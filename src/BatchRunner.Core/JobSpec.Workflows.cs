namespace BatchRunner.Core;

public sealed partial record JobSpec
{
    /// <summary>An array job: <see cref="ArraySpec.Size"/> children share this spec; null: an ordinary job.</summary>
    public ArraySpec? Array { get; init; }

    /// <summary>Jobs that must have ended as their condition says before this one is queued (Slurm's --dependency).</summary>
    public IReadOnlyList<JobDependency> DependsOn { get; init; } = [];

    /// <summary>Jobs whose outputs are mounted read-only under <c>/inputs/JOB-ID/</c>.</summary>
    public IReadOnlyList<InputsFrom> InputsFrom { get; init; } = [];
}

/// <summary><see cref="Size"/> children (indexes 0..Size-1), at most <see cref="Parallelism"/> of them queued or running at once, cluster-wide.</summary>
public sealed record ArraySpec(int Size, int Parallelism)
{
    public const int MaxSize = 10_000;
}

/// <summary>This job waits until job <see cref="Job"/> has ended as <see cref="Condition"/> asks (<see cref="DependencyCondition"/>).</summary>
public sealed record JobDependency(Guid Job, string Condition);

/// <summary>The outputs of job <see cref="Job"/> (only those under <see cref="Path"/> when set, which then becomes the
/// root) are mounted at <c>/inputs/JOB-ID/</c>. For an array, each child's under <c>/inputs/JOB-ID/INDEX/</c>.</summary>
public sealed record InputsFrom(Guid Job, string? Path);

/// <summary>
/// When a dependency lets its dependent go, as Slurm's afterok, afterany and afternotok. A condition holds once the
/// dependency is final in the right way, and can never hold once it is final in another: <see cref="Failed"/> counts a
/// cancelled dependency as one that did not succeed. On an array, the parent's state is what counts: it is final only
/// once every child is.
/// </summary>
public static class DependencyCondition
{
    public const string Succeeded = "succeeded";
    public const string Finished = "finished";
    public const string Failed = "failed";
    public static readonly IReadOnlyList<string> All = [Succeeded, Finished, Failed];

    /// <summary>True when a dependency in <paramref name="state"/> satisfies <paramref name="condition"/>.</summary>
    public static bool Holds(string condition, string state) => condition switch
    {
        Succeeded => state == JobState.Succeeded,
        Failed => state is JobState.Failed or JobState.Cancelled,
        _ => JobState.IsFinal(state),
    };

    /// <summary>True when a dependency in <paramref name="state"/> can never satisfy <paramref name="condition"/> any more.</summary>
    public static bool CanNeverHold(string condition, string state) => JobState.IsFinal(state) && !Holds(condition, state);
}
