using Hangfire.AspNetCore;
using Hangfire.Logging;

namespace BatchRunner.Server.Hosting;

/// <summary>
/// Hangfire's log provider is process-wide, while each BatchRunner host has its own logger factory. The
/// stock setup hands Hangfire the factory of whichever host configured it last, and once that host is
/// disposed every other host's Hangfire workers fail on a disposed factory (and stop taking jobs). This
/// provider forwards to the newest host that is still running, and logs nothing when none is.
/// </summary>
public static class HangfireLogging
{
    private static readonly List<ILoggerFactory> Live = [];
    private static readonly Dictionary<ILoggerFactory, AspNetCoreLogProvider> Providers = [];

    public static readonly ILogProvider Provider = new ForwardingProvider();

    /// <summary>Makes <paramref name="factory"/> Hangfire's log target until the returned handle is disposed.</summary>
    public static IDisposable Register(ILoggerFactory factory)
    {
        lock (Live)
        {
            Live.Add(factory);
            Providers[factory] = new AspNetCoreLogProvider(factory);
        }
        return new Registration(factory);
    }

    private static AspNetCoreLogProvider? Current()
    {
        lock (Live) return Live.Count == 0 ? null : Providers[Live[^1]];
    }

    private sealed class Registration(ILoggerFactory factory) : IDisposable
    {
        public void Dispose()
        {
            lock (Live)
            {
                Live.Remove(factory);
                Providers.Remove(factory);
            }
        }
    }

    private sealed class ForwardingProvider : ILogProvider
    {
        public ILog GetLogger(string name) => new ForwardingLog(name);
    }

    private sealed class ForwardingLog(string name) : ILog
    {
        public bool Log(Hangfire.Logging.LogLevel logLevel, Func<string>? messageFunc, Exception? exception = null)
        {
            // Hangfire writes some messages with "\r\n": a lone "\r" would stay in a journald entry (shown as
            // "[blob data]") after the systemd console format has joined the lines.
            var message = messageFunc is null ? null : new Func<string>(() => messageFunc().ReplaceLineEndings());
            try { return Current()?.GetLogger(name).Log(logLevel, message, exception) ?? false; }
            catch (ObjectDisposedException) { return false; }
        }
    }
}
