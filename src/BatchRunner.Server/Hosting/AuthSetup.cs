using BatchRunner.Server.Api;
using BatchRunner.Server.Auth;
using BatchRunner.Server.Notifications;
using BatchRunner.Server.Storage;
using Microsoft.AspNetCore.Authentication;

namespace BatchRunner.Server.Hosting;

/// <summary>Wiring of issue 18's services: keys, roles, rates, anti-forgery, webhooks, the Hangfire reconciler.</summary>
public static class AuthSetup
{
    public static IServiceCollection AddBatchRunnerAuth(this IServiceCollection services, BatchRunnerOptions options)
    {
        services.TryAddSingletonTimeProvider();
        services.AddSingleton<ApiKeyStore>();
        services.AddSingleton<KeyCache>();
        // One scheme, the default for every request: endpoints then only say which policy they need.
        services.AddAuthentication(ApiKeyAuthentication.SchemeName)
            .AddScheme<AuthenticationSchemeOptions, ApiKeyAuthentication>(ApiKeyAuthentication.SchemeName, null);
        services.AddBatchRunnerPolicies();
        services.AddBatchRunnerRateLimits(options.Auth);
        // Hangfire's dashboard checks the anti-forgery token of its POSTs once IAntiforgery is registered.
        services.AddAntiforgery();
        return services;
    }

    public static IServiceCollection AddBatchRunnerWebhooks(this IServiceCollection services, BatchRunnerOptions options)
    {
        services.AddSingleton<NotificationStore>();
        services.AddSingleton<JobDocuments>();
        services.AddSingleton<IJobDocuments>(sp => sp.GetRequiredService<JobDocuments>());
        services.AddSingleton(new WebhookPolicy(options.Webhooks.AllowedHosts));
        services.AddHttpClient(WebhookSender.HttpClientName)
            .ConfigurePrimaryHttpMessageHandler(sp => WebhookSender.CreateHandler(sp.GetRequiredService<WebhookPolicy>()));
        services.AddHostedService<WebhookSender>();
        return services;
    }

    /// <summary>Queued jobs whose Hangfire message was deleted or lost in Hangfire's dashboard end or run (every node).</summary>
    public static IServiceCollection AddBatchRunnerQueueReconciler(this IServiceCollection services)
    {
        services.AddSingleton<Nodes.QueueReconciler>();
        services.AddHostedService(sp => sp.GetRequiredService<Nodes.QueueReconciler>());
        return services;
    }

    private static void TryAddSingletonTimeProvider(this IServiceCollection services)
    {
        if (!services.Any(d => d.ServiceType == typeof(TimeProvider))) services.AddSingleton(TimeProvider.System);
    }
}
