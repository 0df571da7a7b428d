using System.Net;
using System.Net.Sockets;
using BatchRunner.Oci.Registry;
using BatchRunner.Server.Notifications;

namespace BatchRunner.Server.Tests;

/// <summary>The webhook host policy: at submission by the URL, and at connection time by the address the name resolves to.</summary>
public sealed class WebhookPolicyFacts
{
    [Theory]
    [InlineData("https://hooks.example.com/x", null)]
    [InlineData("http://10.1.2.3:8080/x", null)]                 // private networks: allowed by "*", like registries
    [InlineData("http://127.0.0.1:9000/x", null)]                // named in the list
    [InlineData("http://127.0.0.1:9001/x", "loopback")]          // another port: not named
    [InlineData("http://[::1]:9000/x", "loopback")]
    [InlineData("http://169.254.169.254/latest", "metadata")]
    [InlineData("http://metadata.google.internal/x", "metadata")]
    [InlineData("http://localhost:9000/x", "loopback")]
    [InlineData("http://api.localhost/x", "loopback")]
    public void CheckUrl_RefusesSpecialHosts_UnlessNamed(string url, string? refusal)
    {
        var why = new WebhookPolicy(["*", "127.0.0.1:9000"]).CheckUrl(new Uri(url));
        if (refusal is null) Assert.Null(why);
        else Assert.Contains(refusal, why);
    }

    [Fact]
    public void CheckUrl_RefusesHostsOutsideTheList_WhenTheListHasNoWildcard()
    {
        var policy = new WebhookPolicy(["hooks.example.com"]);
        Assert.Null(policy.CheckUrl(new Uri("https://hooks.example.com/a")));
        Assert.Contains("is not in BatchRunner:Webhooks:AllowedHosts", policy.CheckUrl(new Uri("https://other.example.com/a")));
    }

    [Fact]
    public async Task Calls_AreRefusedAtConnectTime_WhenTheNameResolvesToLoopback()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        // The handler the sender uses judges the address "localhost" resolves to, whatever the URL check said.
        using (var client = new HttpClient(WebhookSender.CreateHandler(new WebhookPolicy(["*"]))))
        {
            var e = await Assert.ThrowsAsync<HttpRequestException>(() => client.PostAsync($"http://localhost:{port}/hook", null));
            Assert.Contains("127.0.0.1", Assert.IsType<RegistryPolicyException>(e.InnerException).Message);
        }
        // Named explicitly, the same call connects.
        using var allowed = new HttpClient(WebhookSender.CreateHandler(new WebhookPolicy(["*", $"localhost:{port}"])));
        using var stop = new CancellationTokenSource();
        var send = allowed.PostAsync($"http://localhost:{port}/hook", null, stop.Token);
        using (var connection = await listener.AcceptTcpClientAsync().WaitAsync(TimeSpan.FromSeconds(10)))
            Assert.True(connection.Connected);
        stop.Cancel(); // no answer is coming: the listener is not an HTTP server
        await Assert.ThrowsAnyAsync<Exception>(() => send);
    }
}
