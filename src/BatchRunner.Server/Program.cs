using BatchRunner.Server.Hosting;

if (args is [NetworkCleanup.Command, .. var settings]) return await NetworkCleanup.RunAsync(settings, Console.Out);

var app = await BatchRunnerApp.BuildAsync(args);
await app.RunAsync();
return 0;

/// <summary>Entry point; also lets tests reference the assembly.</summary>
public partial class Program;
