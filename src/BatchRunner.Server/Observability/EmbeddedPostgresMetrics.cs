using BatchRunner.Server.Storage.Embedded;
using Prometheus;

namespace BatchRunner.Server.Observability;

/// <summary>Series of the embedded PostgreSQL, read from its supervisor at scrape time (only a process that runs one exports them).</summary>
public static class EmbeddedPostgresMetrics
{
    public static readonly Counter Restarts = Metrics.CreateCounter(
        "batchrunner_embedded_postgres_restarts_total",
        "Postmasters of the embedded PostgreSQL started again after one died (killed, crashed, stopped by someone else); " +
        "one that dies during its own crash recovery counts too.");

    public static readonly Gauge Up = Metrics.CreateGauge(
        "batchrunner_embedded_postgres_up",
        "1 while the embedded PostgreSQL accepts connections, 0 while it is down, restarting or replaying its WAL.");

    /// <summary>Copies the supervisor's counts into the series (the counter only ever grows).</summary>
    public static void Publish(EmbeddedPostgresStatus status)
    {
        Restarts.IncTo(status.Restarts);
        Up.Set(status.State == EmbeddedPostgresState.Running ? 1 : 0);
    }
}
