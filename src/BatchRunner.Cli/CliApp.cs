using System.CommandLine;
using System.CommandLine.Help;
using BatchRunner.Cli.Commands;

namespace BatchRunner.Cli;

/// <summary>The command tree of <c>batchrunner</c> and how it is invoked.</summary>
internal static class CliApp
{
    public static Command BuildRoot()
    {
        // A plain Command named "batchrunner", not RootCommand: RootCommand takes its name from the executable, which is
        // BatchRunner.Cli.dll under `dotnet tool` and `dotnet run`.
        var root = new Command("batchrunner", "BatchRunner's command line: run container jobs like docker run, submit job files, follow logs, fetch outputs.")
        {
            new HelpOption(),
            new VersionOption(),
        };
        GlobalOptions.AddTo(root);
        root.Add(RunCommand.Create());
        root.Add(SubmitCommand.Create());
        foreach (var c in JobCommands.Create()) root.Add(c);
        root.Add(ImageCommands.Create());
        root.Add(NodesCommand.Create());
        root.Add(ApiKeyCommands.Create());
        root.Add(ScheduleCommands.Create());
        root.Add(LoginCommand.Create());
        root.Add(CompletionCommand.Create());
        root.Add(CompletionCommand.CreateHidden(root));
        return root;
    }

    public static async Task<int> RunAsync(string[] args)
    {
        var parse = BuildRoot().Parse(args);
        // Ctrl-C is handled where it means something (run cancels its job); elsewhere the default ends the process.
        var rc = await parse.InvokeAsync(new InvocationConfiguration { ProcessTerminationTimeout = null });
        return parse.Errors.Count > 0 ? ExitCodes.Usage : rc;
    }
}
