using BatchRunner.Server.Hosting;
using BatchRunner.Testing;
using Microsoft.AspNetCore.Builder;

namespace BatchRunner.Server.Tests;

/// <summary>
/// One real BatchRunner (API + worker in one process) on a free loopback port, with its embedded
/// PostgreSQL in a temp data directory, real runc, and real registries: an open one holding the busybox
/// image, two with basic auth (credentials configured for one of them only), and one with basic auth whose
/// credentials come from a Docker config's credHelpers entry (a docker-credential-* script in a temp dir).
/// </summary>
public sealed class ServerFixture : IAsyncLifetime
{
    public const string ApiKey = "test-key-7d1c0e";
    public const string RegistryUser = "puller";
    public const string RegistryPassword = "s3cret-pw";
    /// <summary>The server's webhook signing key (for jobs without a notify.secret).</summary>
    public const string WebhookSecret = "fixture-webhook-secret-5e1f";

    public WebApplication App { get; private set; } = null!;
    /// <summary>The API with the key.</summary>
    public BatchRunnerClient Api { get; private set; } = null!;
    /// <summary>Raw requests with the key.</summary>
    public HttpClient Client => Api.Http;
    public HttpClient Anonymous { get; private set; } = null!;
    public string DataDir { get; } = Path.Combine("/tmp", "br-server-tests-" + Guid.NewGuid().ToString("N")[..8]);
    public TestRegistry Registry { get; private set; } = null!;
    public TestRegistry AuthRegistry { get; private set; } = null!;
    public TestRegistry UnconfiguredAuthRegistry { get; private set; } = null!;
    public TestRegistry HelperAuthRegistry { get; private set; } = null!;
    public string Busybox { get; private set; } = null!;
    public string AuthBusybox { get; private set; } = null!;
    public string UnconfiguredAuthBusybox { get; private set; } = null!;
    public string HelperAuthBusybox { get; private set; } = null!;
    /// <summary>Holds the Docker config.json and the docker-credential-fixture helper.</summary>
    public string DockerConfigDir { get; } = Directory.CreateTempSubdirectory("br-server-dockerconfig-").FullName;

    public async Task InitializeAsync()
    {
        Registry = await TestRegistry.StartAsync();
        AuthRegistry = await TestRegistry.StartAsync(RegistryUser, RegistryPassword);
        UnconfiguredAuthRegistry = await TestRegistry.StartAsync(RegistryUser, RegistryPassword);
        Busybox = await TestImages.PushBusyboxAsync(Registry);
        AuthBusybox = await TestImages.PushBusyboxAsync(AuthRegistry);
        UnconfiguredAuthBusybox = await TestImages.PushBusyboxAsync(UnconfiguredAuthRegistry);
        HelperAuthRegistry = await TestRegistry.StartAsync(RegistryUser, RegistryPassword);
        HelperAuthBusybox = await TestImages.PushBusyboxAsync(HelperAuthRegistry);
        var dockerConfig = WriteDockerConfigWithCredHelper();

        App = await BatchRunnerApp.BuildAsync([
            "--urls", "http://127.0.0.1:0",
            $"--BatchRunner:DataDir={DataDir}",
            .. TestRegistry.ServerArgs,
            $"--BatchRunner:ApiKey={ApiKey}",
            // Workers unset: the default (enough to fill the node with small jobs) is what QuotaFacts' sweep checks.
            "--BatchRunner:Queues:0=default",
            "--BatchRunner:Queues:1=limited",
            "--BatchRunner:QueueLimits:limited=1",
            "--BatchRunner:Labels:zone=a",
            "--BatchRunner:Capacity:Cpus=2",
            "--BatchRunner:Capacity:Memory=4Gi",
            // Running jobs' usage is written every second (default 5): tests that read it wait less.
            "--BatchRunner:LiveUsageSeconds=1",
            $"--BatchRunner:Registries:0:Registry={AuthRegistry.Host}",
            $"--BatchRunner:Registries:0:Username={RegistryUser}",
            $"--BatchRunner:Registries:0:Password={RegistryPassword}",
            $"--BatchRunner:DockerConfigPath={dockerConfig}",
            $"--BatchRunner:CredentialHelperPath={DockerConfigDir}",
            // Viewer keys get small buckets, so that RequestLimitsFacts sees a 429 within a few requests (each key has
            // its own bucket: other tests' viewer keys send far fewer).
            "--BatchRunner:Auth:RateLimits:viewer:PermitsPerSecond=2",
            "--BatchRunner:Auth:RateLimits:viewer:Burst=30",
            // Webhook receivers in tests listen on 127.0.0.1, which is allowed only when named.
            "--BatchRunner:Webhooks:AllowedHosts:0=*",
            "--BatchRunner:Webhooks:AllowedHosts:1=127.0.0.1",
            "--BatchRunner:Webhooks:InitialBackoffSeconds=1",
            $"--BatchRunner:Webhooks:Secret={WebhookSecret}",
            "--BatchRunner:ReconcileSeconds=1",
            "--Logging:LogLevel:Default=Warning",
            "--Logging:LogLevel:BatchRunner=Information",
        ]);
        (Api, var address) = await InProcessHost.StartAsync(App, ApiKey);
        Anonymous = new HttpClient { BaseAddress = new Uri(address) };
    }

    public async Task DisposeAsync()
    {
        Api?.Dispose();
        Anonymous?.Dispose();
        await InProcessHost.StopAsync(App);
        foreach (var r in new[] { Registry, AuthRegistry, UnconfiguredAuthRegistry, HelperAuthRegistry })
            if (r is not null) await r.DisposeAsync();
        try { Directory.Delete(DockerConfigDir, recursive: true); } catch (IOException) { }
        try { if (Directory.Exists(DataDir)) Directory.Delete(DataDir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    // credHelpers names a helper for HelperAuthRegistry only, so the other registries behave as without the file.
    private string WriteDockerConfigWithCredHelper()
    {
        var helper = Path.Combine(DockerConfigDir, "docker-credential-fixture");
        File.WriteAllText(helper, $$"""
            #!/bin/sh
            url=$(cat)
            printf '{"ServerURL":"%s","Username":"{{RegistryUser}}","Secret":"{{RegistryPassword}}"}' "$url"
            """);
        File.SetUnixFileMode(helper, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        var config = Path.Combine(DockerConfigDir, "config.json");
        File.WriteAllText(config, $$"""{ "credHelpers": { "{{HelperAuthRegistry.Host}}": "fixture" } }""");
        return config;
    }
}

[CollectionDefinition(Name)]
public sealed class ServerCollection : ICollectionFixture<ServerFixture>
{
    public const string Name = "server";
}
