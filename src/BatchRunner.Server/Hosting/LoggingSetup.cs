using Microsoft.Extensions.Logging.Console;

namespace BatchRunner.Server.Hosting;

/// <summary>
/// Console logging: the default human-readable format, or one JSON object per line for log shippers
/// (<c>Logging:Json=true</c> or <c>BATCHRUNNER_LOG_FORMAT=json</c>). JSON lines carry scopes, so every
/// line written while a job runs has its <c>JobId</c> (the executor opens a <c>JobId</c> scope around each execution) whatever component
/// wrote it: image store, runtime, executor. Under systemd (<see cref="SystemdSetup"/>) the human-readable lines
/// start with their syslog priority (<c>&lt;6&gt;</c> information, <c>&lt;4&gt;</c> warning, <c>&lt;3&gt;</c> error), which
/// journald strips and records as the entry's PRIORITY; JSON lines stay JSON there too.
/// </summary>
public static class LoggingSetup
{
    public const string FormatVariable = "BATCHRUNNER_LOG_FORMAT";

    /// <summary>True when JSON console logs were asked for, in configuration or in the environment.</summary>
    public static bool JsonRequested(IConfiguration config) =>
        config.GetValue<bool>("Logging:Json")
        || string.Equals(Environment.GetEnvironmentVariable(FormatVariable), "json", StringComparison.OrdinalIgnoreCase);

    /// <summary>Switches the host's console logger to JSON lines when asked for.</summary>
    public static WebApplicationBuilder AddBatchRunnerLogging(this WebApplicationBuilder builder)
    {
        if (JsonRequested(builder.Configuration)) builder.Logging.AddJsonConsole(ConfigureJson);
        else if (SystemdSetup.UnderServiceManager) builder.Logging.AddSystemdConsole();
        return builder;
    }

    /// <summary>The same console format for loggers made before the host exists (start-up: embedded PostgreSQL, migrations).</summary>
    public static void ConfigureBootLogging(ILoggingBuilder logging, IConfiguration config)
    {
        if (JsonRequested(config)) logging.AddJsonConsole(ConfigureJson);
        else if (SystemdSetup.UnderServiceManager) logging.AddSystemdConsole();
        else logging.AddConsole();
    }

    private static void ConfigureJson(JsonConsoleFormatterOptions o)
    {
        o.IncludeScopes = true;
        o.UseUtcTimestamp = true;
        o.TimestampFormat = "yyyy-MM-dd'T'HH:mm:ss.fff'Z'";
        o.JsonWriterOptions = new System.Text.Json.JsonWriterOptions { Indented = false };
    }
}
