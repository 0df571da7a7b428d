namespace BatchRunner.Server.Storage;

/// <summary>What <see cref="JobStore.BeginAttemptAsync"/> did: a closed set, so that every caller handles each case.</summary>
public abstract record AttemptStart
{
    private AttemptStart() { }

    /// <summary>Attempt <paramref name="Attempt"/> is this node instance's: the job is <c>starting</c>.</summary>
    /// <param name="LostAttempts">Attempts of the job closed as node_lost so far (this begin may have closed one).</param>
    public sealed record Started(int Attempt, int LostAttempts) : AttemptStart;

    /// <summary>The job's queue already has <paramref name="Limit"/> jobs starting or running: nothing changed.</summary>
    public sealed record QueueFull(int Limit) : AttemptStart;

    /// <summary>The job's tenant already runs <paramref name="Used"/> of its maxRunning <paramref name="Limit"/> of
    /// <paramref name="Resource"/> (cpus, memoryBytes or gpus), and this job would take it past: nothing changed.</summary>
    public sealed record TenantQuotaFull(string Tenant, string Resource, double Used, double Limit) : AttemptStart;

    /// <summary>Nothing must run: the job is final, cancelled, or its attempt runs on another live node instance.</summary>
    public sealed record NothingToRun : AttemptStart;
}
