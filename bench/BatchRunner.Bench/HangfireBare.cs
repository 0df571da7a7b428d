using System.Diagnostics;
using Hangfire;
using Hangfire.PostgreSql;
using Hangfire.PostgreSql.Factories;

namespace BatchRunner.Bench;

/// <summary>
/// The idle baseline: a bare Hangfire server with Hangfire.PostgreSql's and Hangfire's default options (worker count
/// min(5 × CPUs, 20), QueuePollInterval 15 s without long polling, heartbeat 30 s, schedule polling 15 s, cancellation check
/// 5 s, expiration and counter aggregation at their defaults), in a process of its own (the bench executable run as
/// <c>hangfire-bare CONNECTION-STRING</c>). It reads commands on stdin: <c>sleep N SECONDS</c> enqueues N jobs that each run
/// <c>sleep SECONDS</c> (a child process, as a BatchRunner job's container is); end of input stops it.
/// </summary>
public static class HangfireBare
{
    public static async Task<int> RunAsync(string connectionString)
    {
        var options = new PostgreSqlStorageOptions { PrepareSchemaIfNecessary = true };
        var storage = new PostgreSqlStorage(new NpgsqlConnectionFactory(connectionString, options), options);
        GlobalConfiguration.Configuration
            .SetDataCompatibilityLevel(CompatibilityLevel.Version_180)
            .UseSimpleAssemblyNameTypeSerializer()
            .UseRecommendedSerializerSettings()
            .UseStorage(storage);
        using var server = new BackgroundJobServer(new BackgroundJobServerOptions(), storage);
        var client = new BackgroundJobClient(storage);
        Console.WriteLine("ready");
        while (await Console.In.ReadLineAsync() is { } line)
        {
            var parts = line.Split(' ');
            if (parts is ["sleep", var n, var seconds])
                for (var i = 0; i < int.Parse(n); i++)
                    client.Enqueue(() => SleepAsync(int.Parse(seconds)));
        }
        foreach (var p in Sleeping.Keys) try { p.Kill(); } catch (InvalidOperationException) { }
        return 0;
    }

    private static readonly System.Collections.Concurrent.ConcurrentDictionary<Process, byte> Sleeping = new();

    /// <summary>The job: a child process that sleeps, waited for.</summary>
    public static async Task SleepAsync(int seconds)
    {
        using var sleep = Process.Start("sleep", seconds.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Sleeping[sleep] = 0;
        await sleep.WaitForExitAsync();
        Sleeping.TryRemove(sleep, out _);
    }
}
