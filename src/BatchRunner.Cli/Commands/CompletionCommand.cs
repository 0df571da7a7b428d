using System.CommandLine;

namespace BatchRunner.Cli.Commands;

/// <summary>
/// <c>batchrunner completion bash</c> prints a bash completion script; the script asks the hidden
/// <c>batchrunner __complete</c> for candidates, which System.CommandLine computes from the same command tree that
/// parses, so completion never drifts from the real options.
/// </summary>
internal static class CompletionCommand
{
    public const string HiddenName = "__complete";

    private const string BashScript = """
        # bash completion for batchrunner; load with: source <(batchrunner completion bash)
        _batchrunner_complete() {
            local IFS=$'\n'
            COMPREPLY=( $(batchrunner __complete --position "$COMP_POINT" "$COMP_LINE" 2>/dev/null) )
        }
        complete -o default -F _batchrunner_complete batchrunner
        """;

    public static Command Create()
    {
        var shell = new Argument<string>("shell") { Description = "bash" };
        shell.AcceptOnlyFromAmong("bash");
        var command = new Command("completion", "Print a shell completion script: source <(batchrunner completion bash)") { shell };
        command.SetAction(_ => Console.Out.WriteLine(BashScript));
        return command;
    }

    /// <summary>Candidates for the word at <c>--position</c> in a whole command line (its first word is the program).</summary>
    public static Command CreateHidden(Command root)
    {
        var position = new Option<int?>("--position") { Description = "cursor offset in the line" };
        var line = new Argument<string>("line") { Description = "the command line being typed" };
        var command = new Command(HiddenName, "completion candidates") { position, line };
        command.Hidden = true;
        command.SetAction(parse =>
        {
            var text = parse.GetValue(line) ?? "";
            var cursor = Math.Clamp(parse.GetValue(position) ?? text.Length, 0, text.Length);
            // Drop the program name: the root command is not a token of its own command line.
            var firstSpace = text.IndexOf(' ');
            var rest = firstSpace < 0 ? "" : text[(firstSpace + 1)..];
            var restCursor = Math.Max(0, cursor - (text.Length - rest.Length));
            foreach (var item in root.Parse(rest).GetCompletions(restCursor))
                Console.Out.WriteLine(item.Label);
        });
        return command;
    }
}
