using BatchRunner.Server.Hosting;

if (args is [NetworkCleanup.Command, .. var settings]) return await NetworkCleanup.RunAsync(settings, Console.Out);

WebApplication app;
try
{
    app = await BatchRunnerApp.BuildAsync(args);
}
catch (StartupRefusedException e)
{
    Console.Error.WriteLine($"batchrunner: {e.Message}");
    return 2;
}

// Started apart from the wait, so that a start that fails (the address in use) still stops what had started, the embedded
// PostgreSQL above all, which would otherwise outlive the process.
try
{
    await app.StartAsync();
}
catch (Exception e)
{
    try { await app.StopAsync(); }
    catch (Exception stop) { Console.Error.WriteLine($"batchrunner: stopping after the failed start: {stop.Message}"); }
    await app.DisposeAsync();
    if (StartupFailure.Describe(e) is { } why)
    {
        Console.Error.WriteLine($"batchrunner: {why}");
        return 2;
    }
    Console.Error.WriteLine($"batchrunner: could not start: {e}");
    return 1;
}
await app.WaitForShutdownAsync();
await app.DisposeAsync();
return 0;

/// <summary>Entry point; also lets tests reference the assembly.</summary>
public partial class Program;
