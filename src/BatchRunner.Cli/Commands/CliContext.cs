using System.Collections;
using System.CommandLine;
using BatchRunner.Cli.Connection;
using BatchRunner.Cli.Http;
using BatchRunner.Cli.Output;

namespace BatchRunner.Cli.Commands;

/// <summary>What one command invocation works with: its parse result, the environment, the output, the server.</summary>
internal sealed class CliContext
{
    private ApiClient? _api;

    public CliContext(ParseResult parse)
    {
        Parse = parse;
        Environment = ReadEnvironment();
        Terminal = new Terminal(GlobalOptions.Format(parse), Environment);
    }

    public ParseResult Parse { get; }
    public IReadOnlyDictionary<string, string?> Environment { get; }
    public Terminal Terminal { get; }
    public string ConfigPath => ConfigFile.DefaultPath(Environment);

    public T? Get<T>(Option<T> option) => Parse.GetValue(option);
    public T? Get<T>(Argument<T> argument) => Parse.GetValue(argument);

    /// <summary>The API client for the server the flags, environment or config file name (resolved on first use).</summary>
    public ApiClient Api => _api ??= new ApiClient(ServerSettings.Resolve(Get(GlobalOptions.Url), Get(GlobalOptions.ApiKey), Environment, ConfigPath));

    private static Dictionary<string, string?> ReadEnvironment()
    {
        var env = new Dictionary<string, string?>(StringComparer.Ordinal);
        foreach (DictionaryEntry e in System.Environment.GetEnvironmentVariables()) env[(string)e.Key] = e.Value as string;
        return env;
    }

    /// <summary>
    /// Runs a command body: a <see cref="CliException"/> becomes its one line on stderr and its exit code, so no
    /// command ever ends in a stack trace for something the user can fix.
    /// </summary>
    public static void SetAction(Command command, Func<CliContext, CancellationToken, Task<int>> body, int errorExitCode = ExitCodes.Error)
    {
        command.SetAction(async (parse, ct) =>
        {
            var ctx = new CliContext(parse);
            try
            {
                return await body(ctx, ct);
            }
            catch (CliException e)
            {
                ctx.Terminal.Error(e.Message, e.Details);
                return e.ExitCode == ExitCodes.Error ? errorExitCode : e.ExitCode;
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                return ExitCodes.Cancelled;
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                // A bug in the CLI: still one line, with the trace only on request.
                ctx.Terminal.Error($"internal error: {e.GetType().Name}: {e.Message}" +
                    (ctx.Environment.ContainsKey("BATCHRUNNER_DEBUG") ? "" : " (BATCHRUNNER_DEBUG=1 shows the stack trace)"),
                    ctx.Environment.ContainsKey("BATCHRUNNER_DEBUG") ? [e.ToString()] : []);
                return ExitCodes.Error;
            }
            finally
            {
                ctx._api?.Dispose();
            }
        });
    }
}
