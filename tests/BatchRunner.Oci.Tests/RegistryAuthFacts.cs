using BatchRunner.Oci.Store;
using BatchRunner.Testing;

namespace BatchRunner.Oci.Tests;

/// <summary>Basic auth against a real docker-registry with an htpasswd file.</summary>
public sealed class RegistryAuthFacts : IAsyncLifetime
{
    private TestRegistry _registry = null!;
    private ImageReference _reference = null!;
    private readonly string _root = Directory.CreateTempSubdirectory("br-registryauth-").FullName;

    public async Task InitializeAsync()
    {
        _registry = await TestRegistry.StartAsync("alice", "s3cret-pw");
        _reference = ImageReference.Parse(await TestImages.PushBusyboxAsync(_registry, "private/busybox", "1"));
    }

    public async Task DisposeAsync()
    {
        await _registry.DisposeAsync();
        Directory.Delete(_root, recursive: true);
    }

    private ImageStore NewStore(params RegistryCredential[] credentials) =>
        new(new ImageStoreOptions { Root = _root, Credentials = credentials, RegistryPolicy = TestPolicies.LoopbackRegistries });

    [Fact]
    public async Task PullAsync_Succeeds_WhenBasicCredentialsAreConfigured()
    {
        using var store = NewStore(new RegistryCredential(_registry.Host, "alice", "s3cret-pw"));

        var image = await store.PullAsync(_reference, PullPolicy.Always, null, CancellationToken.None);

        Assert.True(File.Exists(Path.Combine(image.LayerPaths[0], "bin", "busybox")));
    }

    [Fact]
    public async Task PullAsync_FailsUnauthorized_WhenNoCredentialsAreConfigured()
    {
        using var store = NewStore();

        var e = await Assert.ThrowsAsync<ImagePullException>(() => store.PullAsync(_reference, PullPolicy.Always, null, CancellationToken.None));

        Assert.Equal($"image {_reference}: unauthorized: authentication required (HTTP 401); no credentials are configured for {_registry.Host}", e.Message);
        Assert.False(e.Transient);
    }

    [Fact]
    public async Task PullAsync_FailsWithoutLeakingPassword_WhenPasswordIsWrong()
    {
        using var store = NewStore(new RegistryCredential(_registry.Host, "alice", "wrong-pw"));

        var e = await Assert.ThrowsAsync<ImagePullException>(() => store.PullAsync(_reference, PullPolicy.Always, null, CancellationToken.None));

        Assert.StartsWith($"image {_reference}: unauthorized: authentication required (HTTP 401)", e.Message);
        Assert.DoesNotContain("wrong-pw", e.ToString());
    }
}
