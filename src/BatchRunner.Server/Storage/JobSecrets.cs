using System.Security.Cryptography;
using System.Text.Json;
using Microsoft.AspNetCore.DataProtection;
using Npgsql;

namespace BatchRunner.Server.Storage;

/// <summary>A job's secrets: its <c>secretEnv</c> and its webhook's key. Held in memory only to store them encrypted
/// and, on the worker, to start the container or sign the call; never serialised anywhere else.</summary>
public sealed record JobSecrets(IReadOnlyDictionary<string, string> Env, string? NotifySecret)
{
    public bool IsEmpty => Env.Count == 0 && NotifySecret is null;

    /// <summary>Same names and values (used to tell a repeated submission from a different one).</summary>
    public bool SameAs(JobSecrets other) =>
        NotifySecret == other.NotifySecret && Env.Count == other.Env.Count
        && Env.All(kv => other.Env.TryGetValue(kv.Key, out var v) && v == kv.Value);

    public override string ToString() => $"JobSecrets({Env.Count} variables)"; // never the values
}

/// <summary>Reads a job's secrets (<see cref="JobSecretStore"/>; a fake in executor tests).</summary>
public interface IJobSecrets
{
    /// <summary>The secrets of job <paramref name="jobId"/>; empty when it has none.</summary>
    Task<JobSecrets> GetAsync(Guid jobId, CancellationToken ct);
}

/// <summary>
/// A job's secrets at rest: encrypted with ASP.NET Core Data Protection (authenticated encryption, AES-256-CBC +
/// HMACSHA256 by default) into batchrunner.jobs.secrets, with the key ring every node reads from the database
/// (<see cref="DataProtectionKeyRepository"/>). The API encrypts them before the job is stored (<see cref="Protect"/>,
/// then <see cref="JobStore.InsertAsync"/>); the worker and the webhook sender decrypt them when they need them.
/// </summary>
public sealed class JobSecretStore(NpgsqlDataSource db, IDataProtectionProvider provider) : IJobSecrets
{
    // The purpose string isolates these payloads from any other use of the key ring; never change it.
    private readonly IDataProtector _protector = provider.CreateProtector("BatchRunner.JobSecrets.v1");

    private sealed record Payload(Dictionary<string, string> Env, string? NotifySecret);

    public byte[] Protect(JobSecrets secrets) =>
        _protector.Protect(JsonSerializer.SerializeToUtf8Bytes(new Payload(new(secrets.Env), secrets.NotifySecret)));

    /// <exception cref="CryptographicException">The payload was not made with this key ring, or was altered.</exception>
    public JobSecrets Unprotect(byte[] protectedData)
    {
        var payload = JsonSerializer.Deserialize<Payload>(_protector.Unprotect(protectedData))!;
        return new JobSecrets(payload.Env, payload.NotifySecret);
    }

    /// <summary>The secrets of job <paramref name="jobId"/>; empty when it has none or does not exist.</summary>
    /// <exception cref="CryptographicException">They cannot be decrypted (the key ring in the database lost the key).</exception>
    public async Task<JobSecrets> GetAsync(Guid jobId, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand("select secrets from batchrunner.jobs where id = @id");
        cmd.Parameters.AddWithValue("id", jobId);
        return await cmd.ExecuteScalarAsync(ct) is byte[] data ? Unprotect(data) : Empty;
    }

    public static readonly JobSecrets Empty = new(new Dictionary<string, string>(), null);
}
