using System.ComponentModel;
using System.Diagnostics;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace BatchRunner.Oci.Registry;

/// <summary>
/// Runs Docker credential helpers (https://github.com/docker/docker-credential-helpers), "get" only: the program
/// <c>docker-credential-NAME</c>, found on a search path, is run with the argument <c>get</c> and the server URL on
/// stdin, and prints <c>{"ServerURL": …, "Username": …, "Secret": …}</c>. Username <c>&lt;token&gt;</c> makes Secret an
/// identity token (an OAuth2 refresh token). A helper without credentials for the server exits non-zero and prints
/// "credentials not found in native keychain": that is anonymous, not a failure.
/// </summary>
/// <remarks>stdout carries the secret: it is parsed and dropped, never logged and never quoted in an error (not even
/// when the helper fails, as helpers print their errors there too). stderr of a failed helper is logged, on one line
/// and cut short (<see cref="RemoteText"/>), and never put in an error a job's submitter reads.
/// Every run is bounded by a timeout; a helper that outlives it is killed with its children.</remarks>
public sealed partial class CredentialHelper
{
    public const string ProgramPrefix = "docker-credential-";
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(30);
    private const string NotFoundMessage = "credentials not found in native keychain";
    private const string TokenUsername = "<token>";
    private const int MaxOutputChars = 1024 * 1024;
    private const int MaxLoggedStderrChars = 500;

    private readonly string? _searchPath;
    private readonly ILogger _logger;

    /// <param name="searchPath">Directories searched for helpers, ':'-separated like PATH; null: this process's PATH,
    /// read at each lookup.</param>
    /// <param name="timeout">How long one helper run may take (default <see cref="DefaultTimeout"/>).</param>
    public CredentialHelper(string? searchPath = null, TimeSpan? timeout = null, ILogger? logger = null)
    {
        _searchPath = searchPath;
        Timeout = timeout ?? DefaultTimeout;
        _logger = logger ?? NullLogger.Instance;
    }

    public TimeSpan Timeout { get; }

    /// <summary>The server URL Docker hands a helper for a registry: its historical index URL for Docker Hub, else the host.</summary>
    public static string ServerUrlFor(string registry) =>
        DockerConfigCredentials.NormalizeRegistry(registry) == "docker.io" ? "https://index.docker.io/v1/" : registry;

    /// <summary>The full path of <c>docker-credential-<paramref name="name"/></c>, or null when no search directory has
    /// it as an executable file.</summary>
    public string? Find(string name)
    {
        var path = _searchPath ?? Environment.GetEnvironmentVariable("PATH") ?? "";
        foreach (var dir in path.Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            var candidate = Path.Combine(dir, ProgramPrefix + name);
            if (File.Exists(candidate) && (File.GetUnixFileMode(candidate) & (UnixFileMode.UserExecute | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute)) != 0)
                return candidate;
        }
        return null;
    }

    /// <summary>Asks helper <paramref name="name"/> for the credential of <paramref name="registry"/>.</summary>
    /// <returns>The credential, or null when the helper has none for the registry.</returns>
    /// <exception cref="RegistryCredentialException">The helper is missing, failed, hung or printed no credential.</exception>
    public async Task<RegistryCredential?> GetAsync(string name, string registry, CancellationToken ct)
    {
        var program = ProgramPrefix + name;
        var path = Find(name) ?? throw new RegistryCredentialException(
            $"credential helper {program} for {registry} not found ({(_searchPath is null ? "not on PATH" : "not in " + _searchPath)})");

        var psi = new ProcessStartInfo(path)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            StandardInputEncoding = new UTF8Encoding(false),
            StandardOutputEncoding = Encoding.UTF8,
            StandardErrorEncoding = Encoding.UTF8,
        };
        psi.ArgumentList.Add("get");
        using var process = new Process { StartInfo = psi };
        try { process.Start(); }
        catch (Win32Exception e) { throw new RegistryCredentialException($"credential helper {path} for {registry} cannot run: {e.Message}", e); }

        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(Timeout);
        // Killing closes the pipes, so the reads below end even where a pipe read ignores cancellation.
        using var killOnTimeout = timeout.Token.Register(() => Kill(process));
        string stdout, stderr;
        try
        {
            var stdoutTask = ReadBoundedAsync(process.StandardOutput, timeout.Token);
            var stderrTask = ReadBoundedAsync(process.StandardError, timeout.Token);
            try
            {
                // As Docker does: the URL without a newline, then end of input.
                await process.StandardInput.WriteAsync(ServerUrlFor(registry).AsMemory(), timeout.Token);
                process.StandardInput.Close();
            }
            catch (IOException) { /* exited without reading stdin; its exit code tells */ }
            stdout = await stdoutTask;
            stderr = await stderrTask;
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            ct.ThrowIfCancellationRequested();
            throw new RegistryCredentialException(
                $"credential helper {program} for {registry} did not answer within {Timeout.TotalSeconds:0.#} s", transient: true);
        }

        if (process.ExitCode != 0)
        {
            if (stdout.Contains(NotFoundMessage, StringComparison.OrdinalIgnoreCase))
            {
                LogNoCredentials(_logger, program, registry);
                return null;
            }
            LogFailed(_logger, program, registry, process.ExitCode, Trim(stderr));
            throw new RegistryCredentialException(
                $"credential helper {program} failed for {registry} (exit code {process.ExitCode}; its stderr is logged)");
        }

        var credential = Parse(stdout, registry) ?? throw new RegistryCredentialException(
            $"credential helper {program} printed no valid credentials for {registry}");
        LogAnswered(_logger, program, registry);
        return credential.Username is null && credential.Password is null && credential.IdentityToken is null ? null : credential;
    }

    private static RegistryCredential? Parse(string stdout, string registry)
    {
        try
        {
            using var doc = JsonDocument.Parse(stdout);
            if (doc.RootElement.ValueKind != JsonValueKind.Object) return null;
            var username = StringProp(doc.RootElement, "Username");
            var secret = StringProp(doc.RootElement, "Secret");
            return username == TokenUsername
                ? new RegistryCredential(registry, IdentityToken: secret)
                : new RegistryCredential(registry, username, secret);
        }
        catch (JsonException) { return null; } // its message may quote the secret
    }

    private static string? StringProp(JsonElement e, string name) =>
        e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String && v.GetString() is { Length: > 0 } s ? s : null;

    private static async Task<string> ReadBoundedAsync(StreamReader reader, CancellationToken ct)
    {
        var text = new StringBuilder();
        var buffer = new char[4096];
        int n;
        while ((n = await reader.ReadAsync(buffer, ct)) > 0)
            if (text.Length < MaxOutputChars) text.Append(buffer, 0, Math.Min(n, MaxOutputChars - text.Length));
        return text.ToString();
    }

    // Helpers relay what their backend said (a keychain, a cloud API): one short line, no control characters.
    private static string Trim(string stderr) => RemoteText.Quote(stderr, MaxLoggedStderrChars);

    private static void Kill(Process process)
    {
        try { process.Kill(entireProcessTree: true); }
        catch (Exception e) when (e is InvalidOperationException or Win32Exception) { /* already exited */ }
    }

    [LoggerMessage(EventId = 4111, Level = LogLevel.Debug, Message = "Credential helper {Helper} gave credentials for {Registry}")]
    private static partial void LogAnswered(ILogger logger, string helper, string registry);

    [LoggerMessage(EventId = 4112, Level = LogLevel.Debug, Message = "Credential helper {Helper} has no credentials for {Registry}: pulling anonymously")]
    private static partial void LogNoCredentials(ILogger logger, string helper, string registry);

    [LoggerMessage(EventId = 4113, Level = LogLevel.Warning, Message = "Credential helper {Helper} failed for {Registry} with exit code {ExitCode}: {Stderr}")]
    private static partial void LogFailed(ILogger logger, string helper, string registry, int exitCode, string stderr);
}
