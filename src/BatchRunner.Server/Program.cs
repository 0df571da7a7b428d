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
await app.RunAsync();
return 0;

/// <summary>Entry point; also lets tests reference the assembly.</summary>
public partial class Program;
