namespace BatchRunner.Cli;

/// <summary>
/// A failure the user can act on: printed as one line ("batchrunner: ...", with optional detail lines such as the
/// server's field errors) and turned into a non-zero exit code; never a stack trace.
/// </summary>
internal sealed class CliException(string message, IReadOnlyList<string>? details = null, int exitCode = ExitCodes.Error) : Exception(message)
{
    public IReadOnlyList<string> Details { get; } = details ?? [];
    public int ExitCode { get; } = exitCode;
}
