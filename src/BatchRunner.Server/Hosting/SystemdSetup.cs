using Microsoft.Extensions.Hosting.Systemd;

namespace BatchRunner.Server.Hosting;

/// <summary>
/// Running as a systemd service (<c>Type=notify</c>, see scripts/systemd/batchrunner.service.in).
/// Guarantees, when a service manager is detected:
/// <list type="bullet">
/// <item><c>READY=1</c> is sent only once the host has started: storage ready (embedded PostgreSQL up,
///   migrations applied), every hosted service started (leftovers removed, node registered) and Kestrel
///   listening, so <c>systemctl start</c> returns when the API answers;</item>
/// <item><c>STOPPING=1</c> is sent on SIGTERM, which stops the host as it does in a terminal (running jobs get
///   <c>ShutdownGraceSeconds</c>, the embedded PostgreSQL is stopped last);</item>
/// <item>console lines carry their syslog priority (<c>&lt;6&gt;</c>, <c>&lt;4&gt;</c>, ...), which journald turns
///   into each entry's PRIORITY (unless JSON lines were asked for: see <see cref="LoggingSetup"/>);</item>
/// <item>no child process (runc or crun, pg_ctl, the watchdog) inherits <c>NOTIFY_SOCKET</c>: runc given one
///   proxies it into the container and <c>run --detach</c> waits for the container's own READY=1, which a batch
///   job never sends (runc 1.1.5 here: still waiting after 8 minutes, deaf to SIGTERM; 0.03 s without it).</item>
/// </list>
/// </summary>
/// <remarks>
/// Microsoft.Extensions.Hosting.Systemd activates only when the parent process is systemd (or PID 1 has a
/// notify socket). A set <c>NOTIFY_SOCKET</c> is taken as the same request: it is how any service manager
/// speaking the sd_notify protocol asks for readiness, and how the tests run the unit's ExecStart line.
/// </remarks>
public static class SystemdSetup
{
    public const string NotifySocketVariable = "NOTIFY_SOCKET";

    private static readonly Lazy<bool> Detected = new(() =>
        SystemdHelpers.IsSystemdService() || !string.IsNullOrEmpty(Environment.GetEnvironmentVariable(NotifySocketVariable)));

    /// <summary>True when this process runs under systemd or another sd_notify service manager (decided once).</summary>
    public static bool UnderServiceManager => Detected.Value;

    /// <summary>Makes the host's lifetime speak sd_notify when a service manager started it; a no-op otherwise.</summary>
    public static WebApplicationBuilder AddBatchRunnerSystemd(this WebApplicationBuilder builder)
    {
        if (!UnderServiceManager) return builder;
        // The notifier reads the socket path now; then the variable is removed from this process's
        // environment so that no child inherits it (see the type's remarks on runc).
        var notifier = new SystemdNotifier();
        Environment.SetEnvironmentVariable(NotifySocketVariable, null);
        builder.Services.AddSingleton<ISystemdNotifier>(notifier);
        builder.Services.AddSingleton<IHostLifetime, SystemdLifetime>();
        return builder;
    }
}
