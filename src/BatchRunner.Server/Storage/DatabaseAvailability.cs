namespace BatchRunner.Server.Storage;

/// <summary>
/// What this process knows about its database beyond "the last query failed": whether it is known to be
/// down and coming back. Only a database this process supervises (the embedded cluster) can be known so;
/// nobody can declare a node dead in a database that is down, and the embedded cluster listens only on a
/// Unix socket, so no other machine shares it.
/// </summary>
public interface IDatabaseAvailability
{
    /// <summary>True while the database is down and being brought back (restart, crash recovery).</summary>
    bool IsRestarting { get; }

    /// <summary><see cref="Environment.TickCount64"/> when it last came back from a restart; 0 if it never went away.</summary>
    long BackSinceTicks { get; }
}

/// <summary>A database this process does not supervise: it is never known to be restarting.</summary>
public sealed class ExternalDatabase : IDatabaseAvailability
{
    public static readonly ExternalDatabase Instance = new();

    private ExternalDatabase() { }

    public bool IsRestarting => false;
    public long BackSinceTicks => 0;
}
