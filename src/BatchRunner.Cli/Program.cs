return await BatchRunner.Cli.CliApp.RunAsync(args);
