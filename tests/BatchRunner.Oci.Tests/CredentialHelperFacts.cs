using System.Diagnostics;
using System.Text;
using BatchRunner.Oci.Registry;
using BatchRunner.Oci.Store;
using BatchRunner.Testing;
using Microsoft.Extensions.Logging;

namespace BatchRunner.Oci.Tests;

/// <summary>The registries the credential-helper tests share: a real docker-registry with basic auth, and an open one.</summary>
public sealed class HelperRegistriesFixture : IAsyncLifetime
{
    public const string User = "helper-user";
    public const string Secret = "helper-s3cret-5f1c9a";

    public TestRegistry Private { get; private set; } = null!;
    public TestRegistry Open { get; private set; } = null!;
    public ImageReference PrivateImage { get; private set; } = null!;
    public ImageReference OpenImage { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        Private = await TestRegistry.StartAsync(User, Secret);
        Open = await TestRegistry.StartAsync();
        PrivateImage = ImageReference.Parse(await TestImages.PushBusyboxAsync(Private, "private/busybox", "1"));
        OpenImage = ImageReference.Parse(await TestImages.PushBusyboxAsync(Open, "open/busybox", "1"));
    }

    public async Task DisposeAsync()
    {
        if (Private is not null) await Private.DisposeAsync();
        if (Open is not null) await Open.DisposeAsync();
    }
}

/// <summary>
/// Docker credential helpers run for real: each test writes docker-credential-NAME shell scripts into its own directory,
/// given to <see cref="CredentialHelper"/> as the search path (the process PATH stays as it is: tests run in parallel).
/// Every script appends the server URL it was asked for to calls-NAME, so tests can count runs.
/// </summary>
public sealed class CredentialHelperFacts : IClassFixture<HelperRegistriesFixture>, IDisposable
{
    private const string Secret = HelperRegistriesFixture.Secret;
    private readonly HelperRegistriesFixture _f;
    private readonly string _dir = Directory.CreateTempSubdirectory("br-credhelper-").FullName;
    private readonly CapturingLogger _log = new();

    public CredentialHelperFacts(HelperRegistriesFixture f)
    {
        _f = f;
        Directory.CreateDirectory(HelperDir);
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string HelperDir => Path.Combine(_dir, "bin");
    private string CallsPath(string name) => Path.Combine(_dir, "calls-" + name);
    private string[] Calls(string name) => File.Exists(CallsPath(name)) ? File.ReadAllLines(CallsPath(name)) : [];

    private void WriteHelper(string name, string body)
    {
        var path = Path.Combine(HelperDir, CredentialHelper.ProgramPrefix + name);
        File.WriteAllText(path, $"#!/bin/sh\nurl=$(cat)\nprintf '%s\\n' \"$url\" >> '{CallsPath(name)}'\n{body}\n");
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
    }

    private void WriteAnsweringHelper(string name, string username, string secret) =>
        WriteHelper(name, $$"""printf '{"ServerURL":"%s","Username":"{{username}}","Secret":"{{secret}}"}' "$url" """);

    private CredentialHelper Helpers(TimeSpan? timeout = null) => new(HelperDir, timeout, _log);

    private ImageStore NewStore(string dockerConfig, TimeSpan? helperTimeout = null, TimeProvider? time = null, HttpMessageHandler? http = null) =>
        new(new ImageStoreOptions
        {
            Root = Path.Combine(_dir, "store-" + Guid.NewGuid().ToString("N")[..8]),
            RegistryPolicy = TestPolicies.LoopbackRegistries,
            CredentialSource = new DockerConfigCredentialSource(DockerConfigCredentials.Parse(dockerConfig), Helpers(helperTimeout), time: time),
        }, _log, http);

    private Task<PreparedImage> PullAsync(ImageStore store, ImageReference image) =>
        store.PullAsync(image, PullPolicy.Always, null, CancellationToken.None);

    private void AssertSecretNotLogged(string secret = Secret)
    {
        Assert.Contains("Credential helper docker-credential-", _log.Text); // the capture works
        Assert.DoesNotContain(secret, _log.Text);
    }

    [Fact]
    public async Task PullAsync_Succeeds_WhenCredsStoreHelperSuppliesBasicCredentials()
    {
        WriteAnsweringHelper("teststore", HelperRegistriesFixture.User, Secret);
        using var store = NewStore("""{ "credsStore": "teststore" }""");

        var image = await PullAsync(store, _f.PrivateImage);

        Assert.True(File.Exists(Path.Combine(image.LayerPaths[0], "bin", "busybox")));
        Assert.Equal([_f.Private.Host], Calls("teststore")); // once for the whole pull, with the registry host on stdin
        AssertSecretNotLogged();
    }

    [Fact]
    public async Task PullAsync_FailsUnauthorized_WhenConfigNamesNoHelper()
    {
        WriteAnsweringHelper("teststore", HelperRegistriesFixture.User, Secret); // installed, not named
        using var store = NewStore("""{ "auths": { "other.example": { "auth": "dTpw" } } }""");

        var e = await Assert.ThrowsAsync<ImagePullException>(() => PullAsync(store, _f.PrivateImage));

        Assert.Equal($"image {_f.PrivateImage}: unauthorized: authentication required (HTTP 401); no credentials are configured for {_f.Private.Host}", e.Message);
        Assert.Empty(Calls("teststore"));
    }

    [Fact]
    public async Task PullAsync_UsesCredHelperOverCredsStore_ForItsRegistry()
    {
        WriteAnsweringHelper("store", HelperRegistriesFixture.User, "wrong-store-secret");
        WriteAnsweringHelper("perregistry", HelperRegistriesFixture.User, Secret);
        using var store = NewStore($$"""{ "credsStore": "store", "credHelpers": { "{{_f.Private.Host}}": "perregistry" } }""");

        await PullAsync(store, _f.PrivateImage);

        Assert.Single(Calls("perregistry"));
        Assert.Empty(Calls("store"));
    }

    [Fact]
    public async Task PullAsync_UsesInlineAuth_OverCredsStore()
    {
        WriteAnsweringHelper("store", HelperRegistriesFixture.User, "wrong-store-secret");
        var auth = Convert.ToBase64String(Encoding.UTF8.GetBytes($"{HelperRegistriesFixture.User}:{Secret}"));
        using var store = NewStore($$"""{ "credsStore": "store", "auths": { "http://{{_f.Private.Host}}": { "auth": "{{auth}}" } } }""");

        await PullAsync(store, _f.PrivateImage);

        Assert.Empty(Calls("store"));
    }

    [Fact]
    public async Task PullAsync_PullsAnonymously_WhenHelperHasNoCredentials()
    {
        // A token registry that also serves anonymous pulls, as Docker Hub does: the helper is asked, has nothing.
        WriteHelper("empty", "echo 'credentials not found in native keychain'; exit 1");
        var fake = await FakeRegistry.CreateAsync(requireToken: true, anonymousTokens: true);
        using var store = NewStore("""{ "credsStore": "empty" }""", http: fake);

        var image = await PullAsync(store, ImageReference.Parse("fake.test/demo/busybox:busybox"));

        Assert.Single(image.LayerPaths);
        Assert.Equal(["fake.test"], Calls("empty"));
        Assert.All(fake.Requests.Where(r => r.Host == "auth.fake.test"), r => Assert.Null(r.AuthScheme));
    }

    [Fact]
    public async Task PullAsync_FailsUnauthorizedNotAsHelperFailure_WhenHelperHasNoCredentialsForPrivateRegistry()
    {
        WriteHelper("empty", "echo 'credentials not found in native keychain'; exit 1");
        using var store = NewStore("""{ "credsStore": "empty" }""");

        var e = await Assert.ThrowsAsync<ImagePullException>(() => PullAsync(store, _f.PrivateImage));

        Assert.Equal($"image {_f.PrivateImage}: unauthorized: authentication required (HTTP 401); no credentials are configured for {_f.Private.Host}", e.Message);
    }

    [Fact]
    public async Task PullAsync_DoesNotRunHelper_WhenRegistryIsOpen()
    {
        // Only a 401 makes a pull look for credentials: an open registry works even when the store's helper is absent.
        using var store = NewStore("""{ "credsStore": "not-installed" }""");

        var image = await PullAsync(store, _f.OpenImage);

        Assert.Single(image.LayerPaths);
    }

    [Fact]
    public async Task PullAsync_FailsNamingHelperAndRegistry_WhenHelperIsMissing()
    {
        using var store = NewStore("""{ "credsStore": "not-installed" }""");

        var e = await Assert.ThrowsAsync<ImagePullException>(() => PullAsync(store, _f.PrivateImage));

        Assert.Equal($"image {_f.PrivateImage}: credential helper docker-credential-not-installed for {_f.Private.Host} not found (not in {HelperDir})", e.Message);
        Assert.False(e.Transient);
    }

    [Fact]
    public async Task PullAsync_FailsNamingHelperWithoutSecret_WhenHelperFails()
    {
        WriteHelper("broken", $$"""
            printf '{"Username":"u","Secret":"{{Secret}}"}'
            echo "keyring is locked" >&2
            exit 3
            """);
        using var store = NewStore("""{ "credsStore": "broken" }""");

        var e = await Assert.ThrowsAsync<ImagePullException>(() => PullAsync(store, _f.PrivateImage));

        Assert.Equal($"image {_f.PrivateImage}: credential helper docker-credential-broken failed for {_f.Private.Host} (exit code 3; its stderr is logged)", e.Message);
        Assert.DoesNotContain(Secret, e.ToString());
        Assert.Contains("keyring is locked", _log.Text); // stderr is logged, stdout never
        AssertSecretNotLogged();
    }

    [Fact]
    public async Task PullAsync_FailsTransientAndKillsHelper_WhenHelperHangs()
    {
        var pidFile = Path.Combine(_dir, "slow.pid");
        WriteHelper("slow", $"echo $$ > '{pidFile}'\nexec sleep 120");
        using var store = NewStore("""{ "credsStore": "slow" }""", helperTimeout: TimeSpan.FromSeconds(1));
        var watch = Stopwatch.StartNew();

        var e = await Assert.ThrowsAsync<ImagePullException>(() => PullAsync(store, _f.PrivateImage));

        Assert.Equal($"image {_f.PrivateImage}: credential helper docker-credential-slow for {_f.Private.Host} did not answer within 1 s", e.Message);
        Assert.True(e.Transient);
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(30), $"took {watch.Elapsed}");
        var pid = File.ReadAllText(pidFile).Trim();
        await Poll.UntilAsync(() => !Directory.Exists($"/proc/{pid}"), TimeSpan.FromSeconds(10), $"helper process {pid} to be killed");
    }

    [Fact]
    public async Task PullAsync_FailsWithoutSecret_WhenHelperPrintsNoJson()
    {
        WriteHelper("garbled", $"echo 'Secret: {Secret}'");
        using var store = NewStore("""{ "credsStore": "garbled" }""");

        var e = await Assert.ThrowsAsync<ImagePullException>(() => PullAsync(store, _f.PrivateImage));

        Assert.Equal($"image {_f.PrivateImage}: credential helper docker-credential-garbled printed no valid credentials for {_f.Private.Host}", e.Message);
        Assert.DoesNotContain(Secret, e.ToString());
        Assert.DoesNotContain(Secret, _log.Text);
    }

    [Fact]
    public async Task PullAsync_FailsWithoutLeakingSecret_WhenRegistryRefusesHelperCredential()
    {
        const string wrong = "wrong-helper-secret-77b0";
        WriteAnsweringHelper("teststore", HelperRegistriesFixture.User, wrong);
        using var store = NewStore("""{ "credsStore": "teststore" }""");

        var e = await Assert.ThrowsAsync<ImagePullException>(() => PullAsync(store, _f.PrivateImage));

        Assert.Equal($"image {_f.PrivateImage}: unauthorized: authentication required (HTTP 401); the credentials configured for {_f.Private.Host} were not accepted", e.Message);
        Assert.DoesNotContain(wrong, e.ToString());
        AssertSecretNotLogged(wrong);
    }

    [Fact]
    public async Task PullAsync_AsksHelperAgain_AfterRegistryRefusedItsCredential()
    {
        // The first answer is stale (an expired token, say); the helper has renewed it by the second run.
        WriteHelper("renewing", $$"""
            if [ "$(wc -l < '{{CallsPath("renewing")}}')" -eq 1 ]; then s=expired-secret; else s={{Secret}}; fi
            printf '{"Username":"{{HelperRegistriesFixture.User}}","Secret":"%s"}' "$s"
            """);
        using var store = NewStore("""{ "credsStore": "renewing" }""");
        await Assert.ThrowsAsync<ImagePullException>(() => PullAsync(store, _f.PrivateImage));

        await PullAsync(store, _f.PrivateImage);

        Assert.Equal(2, Calls("renewing").Length);
    }

    [Fact]
    public async Task PullAsync_RunsHelperOnce_WhileItsAnswerIsFresh_AndAgainWhenStale()
    {
        WriteAnsweringHelper("teststore", HelperRegistriesFixture.User, Secret);
        var time = new ManualTime();
        using var store = NewStore("""{ "credsStore": "teststore" }""", time: time);

        await PullAsync(store, _f.PrivateImage);
        time.Now += TimeSpan.FromMinutes(4);
        await PullAsync(store, _f.PrivateImage);
        Assert.Single(Calls("teststore"));

        time.Now += TimeSpan.FromMinutes(1);
        await PullAsync(store, _f.PrivateImage);
        Assert.Equal(2, Calls("teststore").Length);
    }

    [Fact]
    public async Task GetAsync_RunsHelperOnce_ForConcurrentCallers()
    {
        WriteHelper("sluggish", $$"""
            sleep 0.5
            printf '{"Username":"u","Secret":"{{Secret}}"}'
            """);
        var source = new DockerConfigCredentialSource(DockerConfigCredentials.Parse("""{ "credsStore": "sluggish" }"""), Helpers());

        var answers = await Task.WhenAll(Enumerable.Range(0, 8).Select(_ => source.GetAsync("r.example", CancellationToken.None).AsTask()));

        Assert.All(answers, a => Assert.Equal(new RegistryCredential("r.example", "u", Secret), a));
        Assert.Single(Calls("sluggish"));
    }

    [Fact]
    public async Task PullAsync_ExchangesIdentityToken_WhenHelperAnswersTokenUsername()
    {
        WriteAnsweringHelper("oauth", "<token>", "idtok-1"); // FakeRegistry's token service accepts refresh token idtok-1
        var fake = await FakeRegistry.CreateAsync(requireToken: true);
        using var store = NewStore("""{ "credHelpers": { "fake.test": "oauth" } }""", http: fake);

        var image = await PullAsync(store, ImageReference.Parse("fake.test/demo/busybox:busybox"));

        Assert.Single(image.LayerPaths);
        Assert.Equal(["fake.test"], Calls("oauth"));
        AssertSecretNotLogged("idtok-1");
    }

    [Fact]
    public async Task GetAsync_SendsDockerHubIndexUrl_WhenRegistryIsDockerIo()
    {
        WriteAnsweringHelper("hub", "hubuser", Secret);

        var credential = await Helpers().GetAsync("hub", "docker.io", CancellationToken.None);

        Assert.Equal(new RegistryCredential("docker.io", "hubuser", Secret), credential);
        Assert.Equal(["https://index.docker.io/v1/"], Calls("hub"));
    }

    private sealed class ManualTime : TimeProvider
    {
        public DateTimeOffset Now { get; set; } = DateTimeOffset.UtcNow;
        public override DateTimeOffset GetUtcNow() => Now;
    }
}

/// <summary>Keeps every log entry, Debug included, with its exception and structured values, to search for secrets.</summary>
internal sealed class CapturingLogger : ILogger<ImageStore>
{
    private readonly List<string> _entries = [];

    public string Text { get { lock (_entries) return string.Join('\n', _entries); } }

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        var entry = $"{logLevel} {eventId.Id}: {formatter(state, exception)} {exception}";
        if (state is IEnumerable<KeyValuePair<string, object?>> values)
            entry += " | " + string.Join(", ", values.Select(v => $"{v.Key}={v.Value}"));
        lock (_entries) _entries.Add(entry);
    }
}
