using System.Runtime.InteropServices;

namespace BatchRunner.Testing;

/// <summary>Sends a signal to a process the test started (kill(2)); tests never signal anything else.</summary>
public static partial class UnixSignals
{
    public const int Term = 15;
    public const int Kill = 9;

    public static void Send(int pid, int signal)
    {
        if (kill(pid, signal) != 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            // ESRCH: it has already exited, which is what the caller wanted.
            if (errno != 3) throw new InvalidOperationException($"kill({pid}, {signal}) failed: errno {errno}");
        }
    }

    [DllImport("libc", SetLastError = true)]
    private static extern int kill(int pid, int sig);
}
