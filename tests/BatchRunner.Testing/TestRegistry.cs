using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace BatchRunner.Testing;

/// <summary>
/// A real OCI distribution registry (<c>docker-registry serve</c>) on 127.0.0.1 with a free port and
/// filesystem storage in a temp dir under /tmp. Optional htpasswd basic auth.
/// Disposing kills the process and removes the temp dir.
/// </summary>
public sealed class TestRegistry : IAsyncDisposable
{
    private Process? _process;
    private readonly StringBuilder _log = new();

    private TestRegistry(string dir, int port, string? username, string? password)
    {
        Directory = dir;
        Port = port;
        Username = username;
        Password = password;
    }

    /// <summary>Server settings that let BatchRunner pull from test registries: they listen on 127.0.0.1, which
    /// AllowedRegistries refuses unless named (as an operator with a local registry names it).</summary>
    public static readonly string[] ServerArgs = ["--BatchRunner:AllowedRegistries:0=*", "--BatchRunner:AllowedRegistries:1=127.0.0.1"];

    /// <summary><see cref="ServerArgs"/> as scripts/install-service.sh options (variables in the env file).</summary>
    public static readonly string[] InstallServiceArgs =
        ["--env", "BatchRunner__AllowedRegistries__0=*", "--env", "BatchRunner__AllowedRegistries__1=127.0.0.1"];

    /// <summary>"127.0.0.1:PORT": the registry part of image references.</summary>
    public string Host => $"127.0.0.1:{Port}";
    public int Port { get; }
    /// <summary>The temp dir holding config, htpasswd and storage.</summary>
    public string Directory { get; }
    /// <summary>storage.filesystem.rootdirectory.</summary>
    public string StorageRoot => Path.Combine(Directory, "storage");
    public string? Username { get; }
    public string? Password { get; }
    public bool RequiresAuth => Username is not null;
    public bool IsRunning => _process is { HasExited: false };

    /// <summary>The registry's stdout/stderr so far (for failure messages).</summary>
    public string Log { get { lock (_log) return _log.ToString(); } }

    /// <summary>Where the registry keeps a blob's bytes (to corrupt or delete one in tests).</summary>
    public string BlobDataPath(string digest)
    {
        var hex = digest.StartsWith("sha256:", StringComparison.Ordinal) ? digest[7..] : digest;
        return Path.Combine(StorageRoot, "docker", "registry", "v2", "blobs", "sha256", hex[..2], hex, "data");
    }

    public static async Task<TestRegistry> StartAsync(string? htpasswdUser = null, string? htpasswdPassword = null)
    {
        if ((htpasswdUser is null) != (htpasswdPassword is null))
            throw new ArgumentException("give both htpasswd user and password, or neither");

        var dir = System.IO.Directory.CreateTempSubdirectory("br-registry-").FullName;
        try
        {
            System.IO.Directory.CreateDirectory(Path.Combine(dir, "storage"));
            if (htpasswdUser is not null)
                await ExternalCommand.RunAsync("htpasswd", ["-Bbc", Path.Combine(dir, "htpasswd"), htpasswdUser, htpasswdPassword!]);

            // A free port can be taken by someone else between probing and binding: retry with a new one.
            Exception? last = null;
            for (var attempt = 0; attempt < 5; attempt++)
            {
                var reg = new TestRegistry(dir, FreePort(), htpasswdUser, htpasswdPassword);
                try
                {
                    await reg.LaunchAsync();
                    return reg;
                }
                catch (Exception e)
                {
                    last = e;
                    reg.Kill();
                }
            }
            throw new InvalidOperationException("docker-registry did not start", last);
        }
        catch
        {
            TryDeleteDir(dir);
            throw;
        }
    }

    private async Task LaunchAsync()
    {
        var config = Path.Combine(Directory, "config.yml");
        var auth = Username is null ? "" : $"""
            auth:
              htpasswd:
                realm: test-registry
                path: {Path.Combine(Directory, "htpasswd")}
            """;
        await File.WriteAllTextAsync(config, $"""
            version: 0.1
            log:
              level: warn
              accesslog:
                disabled: true
            storage:
              filesystem:
                rootdirectory: {StorageRoot}
              delete:
                enabled: true
            http:
              addr: 127.0.0.1:{Port}
            {auth}
            """);

        var psi = new ProcessStartInfo("docker-registry")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add("serve");
        psi.ArgumentList.Add(config);
        var p = new Process { StartInfo = psi };
        // Drain both pipes: a full pipe would block the registry.
        p.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (_log) _log.AppendLine(e.Data); };
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (_log) _log.AppendLine(e.Data); };
        p.Start();
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        _process = p;

        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(2) };
        var deadline = Stopwatch.StartNew();
        while (true)
        {
            if (p.HasExited)
                throw new InvalidOperationException($"docker-registry exited with {p.ExitCode}: {Log}");
            try
            {
                using var resp = await http.GetAsync($"http://{Host}/v2/");
                if (resp.StatusCode is HttpStatusCode.OK or HttpStatusCode.Unauthorized) return;
            }
            catch (HttpRequestException) { /* not listening yet */ }
            if (deadline.Elapsed > TimeSpan.FromSeconds(15))
                throw new TimeoutException($"docker-registry on {Host} not ready after 15 s: {Log}");
            await Task.Delay(20);
        }
    }

    /// <summary>Stops the registry process but keeps its storage (e.g. to prove a pull needs no network).</summary>
    public async Task StopAsync()
    {
        var p = _process;
        if (p is null) return;
        Kill();
        await p.WaitForExitAsync();
    }

    private void Kill()
    {
        try { if (_process is { HasExited: false }) _process.Kill(entireProcessTree: true); }
        catch (InvalidOperationException) { /* already gone */ }
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        _process?.Dispose();
        _process = null;
        TryDeleteDir(Directory);
    }

    private static int FreePort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }

    private static void TryDeleteDir(string dir)
    {
        try { System.IO.Directory.Delete(dir, recursive: true); }
        catch (DirectoryNotFoundException) { }
    }
}
