using System.CommandLine;
using BatchRunner.Cli.Output;

namespace BatchRunner.Cli.Commands;

/// <summary>Options every command takes (declared once on the root, recursive).</summary>
internal static class GlobalOptions
{
    public static readonly Option<string?> Url = new("--url")
    {
        Description = "BatchRunner server URL [default: $BATCHRUNNER_URL, then the login config, then http://127.0.0.1:8080]",
        Recursive = true,
    };

    public static readonly Option<string?> ApiKey = new("--api-key")
    {
        Description = "API key [default: $BATCHRUNNER_API_KEY, then the login config]",
        Recursive = true,
    };

    public static readonly Option<string> Output = CreateOutput();

    private static Option<string> CreateOutput()
    {
        var o = new Option<string>("--output", "-o")
        {
            Description = "text for people, json for scripts (the API's own JSON)",
            DefaultValueFactory = _ => "text",
            Recursive = true,
        };
        o.AcceptOnlyFromAmong("text", "json");
        return o;
    }

    public static OutputFormat Format(ParseResult parse) => parse.GetValue(Output) == "json" ? OutputFormat.Json : OutputFormat.Text;

    public static void AddTo(Command root)
    {
        root.Add(Url);
        root.Add(ApiKey);
        root.Add(Output);
    }
}
