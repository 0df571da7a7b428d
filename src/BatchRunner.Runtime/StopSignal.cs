using System.Globalization;

namespace BatchRunner.Runtime;

/// <summary>
/// The signal that asks a container to stop: SIGTERM, or the image's <c>StopSignal</c> (OCI config) when it names a
/// signal this host knows ("SIGINT", "INT", "2", "SIGRTMIN+3"). A signal name is what the runtime's <c>kill</c> takes.
/// </summary>
public static class StopSignal
{
    public const string Default = "SIGTERM";

    private static readonly Dictionary<string, int> Numbers = new(StringComparer.OrdinalIgnoreCase)
    {
        ["SIGHUP"] = 1, ["SIGINT"] = 2, ["SIGQUIT"] = 3, ["SIGILL"] = 4, ["SIGTRAP"] = 5, ["SIGABRT"] = 6, ["SIGBUS"] = 7,
        ["SIGFPE"] = 8, ["SIGKILL"] = 9, ["SIGUSR1"] = 10, ["SIGSEGV"] = 11, ["SIGUSR2"] = 12, ["SIGPIPE"] = 13,
        ["SIGALRM"] = 14, ["SIGTERM"] = 15, ["SIGSTKFLT"] = 16, ["SIGCHLD"] = 17, ["SIGCONT"] = 18, ["SIGSTOP"] = 19,
        ["SIGTSTP"] = 20, ["SIGTTIN"] = 21, ["SIGTTOU"] = 22, ["SIGURG"] = 23, ["SIGXCPU"] = 24, ["SIGXFSZ"] = 25,
        ["SIGVTALRM"] = 26, ["SIGPROF"] = 27, ["SIGWINCH"] = 28, ["SIGIO"] = 29, ["SIGPWR"] = 30, ["SIGSYS"] = 31,
    };

    /// <summary>"SIGINT" for "SIGINT", "int", "2"; "SIGRTMIN+3" as it is; null for what names no signal (or one that
    /// cannot ask a process to stop: SIGKILL is the end of the grace period, SIGSTOP would freeze it).</summary>
    public static string? Normalize(string? signal)
    {
        if (string.IsNullOrWhiteSpace(signal)) return null;
        var s = signal.Trim().ToUpperInvariant();
        if (!s.StartsWith("SIG", StringComparison.Ordinal) && !char.IsDigit(s[0])) s = "SIG" + s;
        string? name = null;
        if (int.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out var n))
        {
            name = Numbers.FirstOrDefault(kv => kv.Value == n).Key;
            if (name is null && n is >= 34 and <= 64) name = $"SIGRTMIN+{n - 34}";
        }
        else if (Numbers.ContainsKey(s)) name = s;
        else if (s is "SIGRTMIN" or "SIGRTMAX") name = s;
        else if ((s.StartsWith("SIGRTMIN+", StringComparison.Ordinal) || s.StartsWith("SIGRTMAX-", StringComparison.Ordinal))
                 && int.TryParse(s[9..], NumberStyles.None, CultureInfo.InvariantCulture, out var k) && k is >= 0 and <= 30)
            name = s;
        return name is "SIGKILL" or "SIGSTOP" ? null : name;
    }
}

/// <summary>How a stop ended: the container exited on <see cref="Signal"/> within <see cref="Grace"/>, or was killed
/// (SIGKILL) when the grace period ran out (at once for a zero grace).</summary>
/// <param name="AlreadyExited">It had exited before the signal was sent: nothing was stopped.</param>
public sealed record StopResult(string Signal, TimeSpan Grace, bool Killed, bool AlreadyExited = false)
{
    /// <summary>"exited within the 10 s stop grace period after SIGTERM", "killed (SIGKILL) after the 10 s stop grace
    /// period: it did not exit on SIGTERM".</summary>
    public string Describe()
    {
        var grace = Grace.TotalSeconds.ToString("0.#", CultureInfo.InvariantCulture);
        if (AlreadyExited) return "it had already exited";
        if (Killed && Grace == TimeSpan.Zero) return "killed (SIGKILL) at once: its stop grace period is 0 s";
        return Killed
            ? $"killed (SIGKILL) after the {grace} s stop grace period: it did not exit on {Signal} (a main process without a handler for it ignores it as PID 1)"
            : $"exited within the {grace} s stop grace period after {Signal}";
    }
}
