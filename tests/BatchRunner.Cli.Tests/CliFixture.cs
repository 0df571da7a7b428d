using System.Net.Http.Json;
using System.Text.Json;
using BatchRunner.Server.Hosting;
using BatchRunner.Testing;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;

namespace BatchRunner.Cli.Tests;

/// <summary>
/// One real BatchRunner (API + worker, embedded PostgreSQL in a temp data directory, real runc) with a real registry
/// holding the busybox image, and a bridge network of its own (own name and /24, no NAT: nothing leaves the host) for the
/// example jobs, which ask for <c>network: bridge</c>. The CLI runs against it with HOME in a temp dir.
/// The example images are built once, in the background from the start, by <c>scripts/example-images.sh</c> (the
/// user's own command): debootstrap takes about a minute, which the other tests overlap.
/// </summary>
public sealed class CliFixture : IAsyncLifetime
{
    public const string ApiKey = "cli-test-key-4f1a";
    private readonly string _tag = Guid.NewGuid().ToString("N")[..6];
    private WebApplication? _app;
    private Task? _exampleImages;

    public string DataDir { get; }
    public string Home { get; } = Directory.CreateTempSubdirectory("br-cli-home-").FullName;
    public string ExamplesCache { get; } = Directory.CreateTempSubdirectory("br-cli-examples-").FullName;
    public string BridgeName => "brc" + _tag;
    public string BridgeState => "/run/batchrunner-cli-tests/cni-" + _tag;
    public string Url { get; private set; } = null!;
    public HttpClient Client { get; private set; } = null!;
    public TestRegistry Registry { get; private set; } = null!;
    public string Busybox { get; private set; } = null!;
    public static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    public CliFixture()
    {
        DataDir = Path.Combine("/tmp", "br-cli-tests-" + _tag);
    }

    public async Task InitializeAsync()
    {
        Registry = await TestRegistry.StartAsync();
        Busybox = await TestImages.PushBusyboxAsync(Registry);
        var subnet = $"10.{Random.Shared.Next(100, 250)}.{Random.Shared.Next(0, 255)}.0/24";
        _app = await BatchRunnerApp.BuildAsync([
            "--urls", "http://127.0.0.1:0",
            $"--BatchRunner:DataDir={DataDir}",
            .. TestRegistry.ServerArgs,
            $"--BatchRunner:ApiKey={ApiKey}",
            $"--BatchRunner:NodeName=cli-{_tag}",
            "--BatchRunner:Workers=4",
            "--BatchRunner:Capacity:Cpus=2",
            "--BatchRunner:Capacity:Memory=4Gi",
            $"--BatchRunner:Isolation:Bridge:Name={BridgeName}",
            $"--BatchRunner:Isolation:Bridge:Network=brc-{_tag}",
            $"--BatchRunner:Isolation:Bridge:Subnet={subnet}",
            $"--BatchRunner:Isolation:Bridge:StateDir={BridgeState}",
            "--BatchRunner:Isolation:Bridge:IpMasq=false",
            "--Logging:LogLevel:Default=Warning",
        ]);
        await _app.StartAsync();
        Url = _app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        Client = new HttpClient { BaseAddress = new Uri(Url), Timeout = TimeSpan.FromSeconds(60) };
        Client.DefaultRequestHeaders.Authorization = new("Bearer", ApiKey);
        _exampleImages = BuildExampleImagesAsync();
    }

    /// <summary>The environment a user would have: the server and key in the variables the CLI reads, HOME in a temp dir.</summary>
    public Dictionary<string, string?> Env(params (string Key, string? Value)[] extra)
    {
        var env = new Dictionary<string, string?>
        {
            ["BATCHRUNNER_URL"] = Url,
            ["BATCHRUNNER_API_KEY"] = ApiKey,
            ["HOME"] = Home,
        };
        foreach (var (k, v) in extra) env[k] = v;
        return env;
    }

    public Task<CliResult> RunAsync(params string[] args) => CliProcess.RunAsync(args, Env());

    /// <summary>examples/busybox:1 and examples/python-numpy:1 imported into the server by scripts/example-images.sh.</summary>
    public Task ExampleImagesAsync() => _exampleImages!;

    private async Task BuildExampleImagesAsync()
    {
        var env = Env(("BATCHRUNNER_CLI", CliProcess.CommandLine), ("BATCHRUNNER_EXAMPLES_CACHE", ExamplesCache));
        var psi = new System.Diagnostics.ProcessStartInfo("bash")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = CliProcess.RepositoryRoot,
        };
        psi.ArgumentList.Add(Path.Combine(CliProcess.RepositoryRoot, "scripts", "example-images.sh"));
        CliProcess.Prepare(psi, env);
        using var p = System.Diagnostics.Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(8));
        await p.WaitForExitAsync(cts.Token);
        if (p.ExitCode != 0)
            throw new InvalidOperationException($"scripts/example-images.sh exited with {p.ExitCode}: {await stdout}\n{await stderr}");
    }

    public async Task<JsonElement> GetJobAsync(string id) =>
        JsonDocument.Parse(await Client.GetStringAsync($"/api/v1/jobs/{id}")).RootElement.Clone();

    public async Task<string> SubmitAsync(object spec)
    {
        var response = await Client.PostAsJsonAsync("/api/v1/jobs", spec, Json);
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, body);
        return JsonDocument.Parse(body).RootElement.GetProperty("id").GetString()!;
    }

    public async Task DisposeAsync()
    {
        if (_exampleImages is not null)
            try { await _exampleImages; } catch (Exception) { /* reported by the test that awaits it */ }
        Client?.Dispose();
        if (_app is not null)
        {
            await _app.StopAsync();
            await _app.DisposeAsync();
        }
        if (Registry is not null) await Registry.DisposeAsync();
        // The bridge's host rules outlive the server by design (other processes may share a bridge): the test's own go here.
        await new BatchRunner.Runtime.Network.BridgeFirewall(new() { BridgeName = BridgeName }).RemoveAsync(CancellationToken.None);
        try { await ExternalCommand.RunAsync("ip", ["link", "delete", BridgeName]); } catch (InvalidOperationException) { }
        foreach (var d in new[] { DataDir, Home, ExamplesCache, BridgeState })
            try { if (Directory.Exists(d)) Directory.Delete(d, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}

[CollectionDefinition(Name)]
public sealed class CliCollection : ICollectionFixture<CliFixture>
{
    public const string Name = "cli";
}
