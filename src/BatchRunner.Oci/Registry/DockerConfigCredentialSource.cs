using System.Collections.Concurrent;

namespace BatchRunner.Oci.Registry;

/// <summary>
/// Credentials as a Docker config names them (<see cref="DockerConfig.Resolve"/>): a credential written in the file is
/// returned as it is; a helper is run (<see cref="CredentialHelper"/>) when a pull first needs the registry's
/// credential, and its answer — a credential or "none" — is kept per registry for <see cref="CacheDuration"/>.
/// </summary>
/// <remarks>The cache makes the many requests of a pull run a helper once, while a credential the helper renews
/// (tokens expire) is picked up within minutes; <see cref="Invalidate"/> (the registry refused it) drops the entry so
/// the next request asks again. Concurrent requests for one registry share one helper run. A failed run is not cached.
/// </remarks>
public sealed class DockerConfigCredentialSource : IRegistryCredentialSource
{
    public static readonly TimeSpan DefaultCacheDuration = TimeSpan.FromMinutes(5);

    private readonly DockerConfig _config;
    private readonly CredentialHelper _helpers;
    private readonly TimeProvider _time;
    private readonly ConcurrentDictionary<string, Lookup> _cache = new(StringComparer.OrdinalIgnoreCase);

    public DockerConfigCredentialSource(DockerConfig config, CredentialHelper helpers, TimeSpan? cacheDuration = null, TimeProvider? time = null)
    {
        _config = config;
        _helpers = helpers;
        _time = time ?? TimeProvider.System;
        CacheDuration = cacheDuration ?? DefaultCacheDuration;
    }

    public TimeSpan CacheDuration { get; }

    public async ValueTask<RegistryCredential?> GetAsync(string registry, CancellationToken ct)
    {
        var (inline, helper) = _config.Resolve(registry);
        if (helper is null) return inline;

        var key = DockerConfigCredentials.NormalizeRegistry(registry);
        var lookup = Current(key, helper, registry);
        try
        {
            // The run itself is bounded by the helper's timeout, not by this caller, whose cancellation must not
            // fail the other callers waiting on the same run.
            return await lookup.Answer.Value.WaitAsync(ct);
        }
        catch (RegistryCredentialException)
        {
            _cache.TryRemove(KeyValuePair.Create(key, lookup));
            throw;
        }
    }

    public void Invalidate(string registry) => _cache.TryRemove(DockerConfigCredentials.NormalizeRegistry(registry), out _);

    // The cached or running lookup for the registry, or a new one when there is none or it is stale.
    private Lookup Current(string key, string helper, string registry)
    {
        while (true)
        {
            var now = _time.GetUtcNow();
            if (_cache.TryGetValue(key, out var cached) && !IsStale(cached, now)) return cached;
            var fresh = new Lookup(new Lazy<Task<RegistryCredential?>>(() => _helpers.GetAsync(helper, registry, CancellationToken.None)), now);
            if (cached is null ? _cache.TryAdd(key, fresh) : _cache.TryUpdate(key, fresh, cached)) return fresh;
        }
    }

    private bool IsStale(Lookup lookup, DateTimeOffset now) =>
        lookup.Answer.IsValueCreated && lookup.Answer.Value.IsCompleted &&
        (!lookup.Answer.Value.IsCompletedSuccessfully || now - lookup.StartedAt >= CacheDuration);

    private sealed record Lookup(Lazy<Task<RegistryCredential?>> Answer, DateTimeOffset StartedAt);
}
