namespace BatchRunner.Runtime;

/// <summary>The state and parent of a process, from /proc/PID/stat.</summary>
public static class ProcStat
{
    /// <summary>(state letter, parent pid), or null when the process is gone.</summary>
    public static (char State, int Ppid)? Read(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            // "pid (comm) S ppid ...": comm may hold spaces and parentheses, so parse after the last ')'.
            var rest = stat[(stat.LastIndexOf(')') + 2)..].Split(' ', 3);
            return (rest[0][0], int.Parse(rest[1], System.Globalization.CultureInfo.InvariantCulture));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException or ArgumentOutOfRangeException)
        {
            return null;
        }
    }
}
