using BatchRunner.Testing;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;

namespace BatchRunner.Server.Tests;

/// <summary>Starting and stopping a BatchRunner host built in the test process, as the fixtures do.</summary>
public static class InProcessHost
{
    /// <summary>Starts <paramref name="app"/> (bound to a free loopback port) and returns a client that sends the key.</summary>
    public static async Task<(BatchRunnerClient Api, string Address)> StartAsync(WebApplication app, string apiKey)
    {
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        return (new BatchRunnerClient(address, apiKey), address);
    }

    public static async Task StopAsync(WebApplication? app)
    {
        if (app is null) return;
        await app.StopAsync();
        await app.DisposeAsync();
    }
}
