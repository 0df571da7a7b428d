using System.CommandLine;
using BatchRunner.Cli.Connection;
using BatchRunner.Cli.Http;
using Spectre.Console;

namespace BatchRunner.Cli.Commands;

/// <summary>
/// <c>batchrunner login</c>: checks the URL and key against the server, then saves them in the config file (mode 0600)
/// for later commands. A key that the server refuses is never saved.
/// </summary>
internal static class LoginCommand
{
    public static Command Create()
    {
        var fromStdin = new Option<bool>("--api-key-stdin") { Description = "read the key from standard input (keeps it out of the shell history)" };
        var command = new Command("login", "Check and save the server URL and API key in ~/.config/batchrunner/config.json (mode 0600)") { fromStdin };
        CliContext.SetAction(command, async (ctx, ct) =>
        {
            string? key = ctx.Get(GlobalOptions.ApiKey);
            if (ctx.Get(fromStdin)) key = (await Console.In.ReadLineAsync(ct))?.Trim();
            else if (key is null && ctx.Environment.GetValueOrDefault(ServerSettings.ApiKeyVariable) is { Length: > 0 } fromEnv) key = fromEnv;
            else if (key is null && !Console.IsInputRedirected && ctx.Terminal.Interactive)
                key = await ctx.Terminal.Err.PromptAsync(new TextPrompt<string>("API key:").Secret(), ct);
            if (string.IsNullOrWhiteSpace(key))
                throw new CliException("no API key: pass --api-key, --api-key-stdin or set BATCHRUNNER_API_KEY", exitCode: ExitCodes.Usage);

            var resolved = ServerSettings.Resolve(ctx.Get(GlobalOptions.Url), key, ctx.Environment, ctx.ConfigPath);
            using (var api = new ApiClient(resolved))
                await api.GetJsonAsync("api/v1/jobs?limit=1", ct); // 401 and unreachable fail here, before anything is saved
            ConfigFile.Write(ctx.ConfigPath, new SavedLogin(resolved.Url.ToString().TrimEnd('/'), key.Trim()));
            ctx.Terminal.Info($"logged in to {resolved.Url}; saved to {ctx.ConfigPath}", "green");
            return ExitCodes.Success;
        });
        return command;
    }
}
