using System.Globalization;

namespace BatchRunner.Server.Storage.Embedded;

/// <summary>
/// PostgreSQL's lock files: <c>postmaster.pid</c> in the data directory and <c>.s.PGSQL.PORT.lock</c> beside
/// the socket. Their first line is the pid of the postmaster that created them. PostgreSQL removes a lock
/// file whose pid is dead by itself, but refuses to start while the pid is alive, even when that number
/// now belongs to an unrelated process.
/// </summary>
internal static class PostmasterPidFile
{
    public const string DataDirLock = "postmaster.pid";

    /// <summary>The pid in the lock file at <paramref name="path"/>, or null when there is none or it is unreadable.</summary>
    public static int? ReadPid(string path)
    {
        try
        {
            using var reader = new StreamReader(path);
            return ParsePid(reader.ReadLine());
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>The first line's pid (negative in a standalone backend's lock); null when it is not a number.</summary>
    public static int? ParsePid(string? firstLine) =>
        int.TryParse(firstLine?.Trim(), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var pid) && pid != 0 ? Math.Abs(pid) : null;
}
