using BatchRunner.Cli.Connection;

namespace BatchRunner.Cli.Http;

/// <summary>The resolved server settings, kept for error messages that say where the URL and key came from.</summary>
internal sealed record ServerContext(ServerSettings Settings);
