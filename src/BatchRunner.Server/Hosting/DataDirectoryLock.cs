using System.Globalization;

namespace BatchRunner.Server.Hosting;

/// <summary>
/// One BatchRunner process per data directory: an exclusive lock on <c>DATA/batchrunner.lock</c> (an advisory
/// <c>flock</c>, as .NET takes for <see cref="FileShare.None"/> on Linux), held from before anything touches the directory
/// until the process ends. A second process on the same directory would take the first one's mounts, loop devices and
/// run directories for a crashed run's leftovers and remove them under its running jobs (its start-up janitor), share
/// its embedded PostgreSQL and register as the same node: it stops at once instead, naming the holder. The kernel drops
/// the lock with its holder, so a process killed with <c>kill -9</c> never keeps the directory from the next.
/// </summary>
public sealed class DataDirectoryLock : IDisposable
{
    public const string FileName = "batchrunner.lock";

    /// <summary>Beside the lock: the holder's process id, for the message a second process gives.</summary>
    public const string PidFileName = "batchrunner.pid";

    private readonly FileStream _file;

    private DataDirectoryLock(FileStream file) => _file = file;

    /// <summary>Takes the lock of <paramref name="dataDir"/> (made if missing).</summary>
    /// <exception cref="StartupRefusedException">Another process holds it.</exception>
    public static DataDirectoryLock Acquire(string dataDir)
    {
        Directory.CreateDirectory(dataDir);
        var path = Path.Combine(dataDir, FileName);
        FileStream file;
        try
        {
            file = new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
        }
        catch (IOException)
        {
            var holder = "another process";
            try
            {
                if (int.TryParse(File.ReadAllText(Path.Combine(dataDir, PidFileName)).Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out var pid))
                    holder = $"another BatchRunner process (pid {pid})";
            }
            catch (IOException) { }
            throw new StartupRefusedException(
                $"the data directory {dataDir} is in use by {holder}: each BatchRunner process needs a data directory of its own " +
                "(BATCHRUNNER_DATA_DIR or BatchRunner:DataDir); stop that process first, or give this one another directory");
        }
        File.WriteAllText(Path.Combine(dataDir, PidFileName), Environment.ProcessId.ToString(CultureInfo.InvariantCulture) + "\n");
        return new DataDirectoryLock(file);
    }

    /// <summary>Releases the lock (the process's end releases it too).</summary>
    public void Dispose() => _file.Dispose();
}

/// <summary>The server refuses to start, for a reason its message gives in full (no stack trace helps): the entry point
/// prints the message alone and exits with status 2.</summary>
public sealed class StartupRefusedException(string message, Exception? inner = null) : InvalidOperationException(message, inner);
