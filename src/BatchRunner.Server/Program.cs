using BatchRunner.Server.Hosting;

var app = await BatchRunnerApp.BuildAsync(args);
await app.RunAsync();

/// <summary>Entry point; also lets tests reference the assembly.</summary>
public partial class Program;
