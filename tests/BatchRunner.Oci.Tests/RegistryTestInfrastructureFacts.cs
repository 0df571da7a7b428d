using System.Net;
using System.Net.Http.Headers;
using System.Text;
using BatchRunner.Testing;

namespace BatchRunner.Oci.Tests;

/// <summary>The shared test registry and images that other test projects rely on.</summary>
public sealed class RegistryTestInfrastructureFacts
{
    [Fact]
    public async Task PushBusyboxAsync_MakesManifestAvailable_WhenRegistryIsAnonymous()
    {
        await using var reg = await TestRegistry.StartAsync();
        var reference = await TestImages.PushBusyboxAsync(reg);

        Assert.Equal($"{reg.Host}/demo/busybox:1", reference);
        using var http = new HttpClient();
        using var req = new HttpRequestMessage(HttpMethod.Get, $"http://{reg.Host}/v2/demo/busybox/manifests/1");
        req.Headers.Accept.ParseAdd("application/vnd.oci.image.manifest.v1+json");
        using var resp = await http.SendAsync(req);
        Assert.Equal(HttpStatusCode.OK, resp.StatusCode);
        Assert.Contains("tar+gzip", await resp.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task PushBusyboxAsync_Authenticates_WhenRegistryRequiresBasicAuth()
    {
        await using var reg = await TestRegistry.StartAsync("alice", "s3cret");
        await TestImages.PushBusyboxAsync(reg);
        await TestImages.PushLayeredAsync(reg);

        using var http = new HttpClient();
        using (var anon = await http.GetAsync($"http://{reg.Host}/v2/"))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, anon.StatusCode);
            Assert.Equal("Basic", anon.Headers.WwwAuthenticate.Single().Scheme);
        }
        using var req = new HttpRequestMessage(HttpMethod.Get, $"http://{reg.Host}/v2/demo/layered/manifests/1");
        req.Headers.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes("alice:s3cret")));
        req.Headers.Accept.ParseAdd("application/vnd.oci.image.manifest.v1+json");
        using var resp = await http.SendAsync(req);
        Assert.Equal(HttpStatusCode.OK, resp.StatusCode);
    }

    [Fact]
    public async Task DisposeAsync_StopsProcessAndRemovesDirectory()
    {
        var reg = await TestRegistry.StartAsync();
        var dir = reg.Directory;
        await reg.DisposeAsync();

        Assert.False(Directory.Exists(dir));
        Assert.False(reg.IsRunning);
    }
}
