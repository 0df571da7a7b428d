using Npgsql;

namespace BatchRunner.Server.Storage;

/// <summary>A stored API key, as listed: never its secret, nor the hash of it.</summary>
public sealed record ApiKeyRecord(Guid Id, string Name, string Tenant, string Role, string Prefix, DateTimeOffset CreatedAt,
    string? CreatedBy, DateTimeOffset? LastUsedAt);

/// <summary>What a presented key stands for: the identity a request is authenticated as.</summary>
public sealed record KeyIdentity(string KeyId, string Tenant, string Role);

/// <summary>
/// API keys in batchrunner.api_keys (a key's tenant is created with it; quotas are <see cref="TenantStore"/>'s). Keys are looked up by the SHA-256 of the
/// key a client presents; a revoked key is never found again (its row stays, for the record).
/// </summary>
public sealed class ApiKeyStore(NpgsqlDataSource db)
{
    /// <summary>Stores a new key; its tenant is created with it when it does not exist yet.</summary>
    public async Task<ApiKeyRecord> CreateAsync(Guid id, string name, string tenant, string role, byte[] keyHash, string prefix,
        string createdBy, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand("""
            with t as (insert into batchrunner.tenants (name) values (@t) on conflict (name) do nothing)
            insert into batchrunner.api_keys (id, name, tenant, role, key_hash, prefix, created_by)
            values (@id, @n, @t, @r, @h, @p, @by)
            returning created_at
            """);
        cmd.Parameters.AddWithValue("id", id);
        cmd.Parameters.AddWithValue("n", name);
        cmd.Parameters.AddWithValue("t", tenant);
        cmd.Parameters.AddWithValue("r", role);
        cmd.Parameters.AddWithValue("h", keyHash);
        cmd.Parameters.AddWithValue("p", prefix);
        cmd.Parameters.AddWithValue("by", createdBy);
        var createdAt = (DateTime)(await cmd.ExecuteScalarAsync(ct))!;
        return new ApiKeyRecord(id, name, tenant, role, prefix, new DateTimeOffset(createdAt, TimeSpan.Zero), createdBy, null);
    }

    /// <summary>Keys that are not revoked, oldest first.</summary>
    public async Task<IReadOnlyList<ApiKeyRecord>> ListAsync(CancellationToken ct)
    {
        await using var cmd = db.CreateCommand("""
            select id, name, tenant, role, prefix, created_at, created_by, last_used_at
              from batchrunner.api_keys where revoked_at is null order by created_at, id
            """);
        var keys = new List<ApiKeyRecord>();
        await using var rd = await cmd.ExecuteReaderAsync(ct);
        while (await rd.ReadAsync(ct))
            keys.Add(new ApiKeyRecord(rd.GetGuid(0), rd.GetString(1), rd.GetString(2), rd.GetString(3), rd.GetString(4),
                rd.GetFieldValue<DateTimeOffset>(5), rd.IsDBNull(6) ? null : rd.GetString(6),
                rd.IsDBNull(7) ? null : rd.GetFieldValue<DateTimeOffset>(7)));
        return keys;
    }

    /// <summary>Revokes a key; false when there is no such key that is not already revoked.</summary>
    public async Task<bool> RevokeAsync(Guid id, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand("update batchrunner.api_keys set revoked_at = now() where id = @id and revoked_at is null");
        cmd.Parameters.AddWithValue("id", id);
        return await cmd.ExecuteNonQueryAsync(ct) == 1;
    }

    /// <summary>The key whose hash is <paramref name="keyHash"/>, if it exists and is not revoked. Records that it was
    /// used, at most once a minute (one more statement only then).</summary>
    public async Task<KeyIdentity?> FindAsync(byte[] keyHash, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand("""
            select id, tenant, role, last_used_at is null or last_used_at < now() - interval '1 minute'
              from batchrunner.api_keys where key_hash = @h and revoked_at is null
            """);
        cmd.Parameters.AddWithValue("h", keyHash);
        Guid id;
        KeyIdentity identity;
        bool stale;
        await using (var rd = await cmd.ExecuteReaderAsync(ct))
        {
            if (!await rd.ReadAsync(ct)) return null;
            id = rd.GetGuid(0);
            identity = new KeyIdentity(id.ToString(), rd.GetString(1), rd.GetString(2));
            stale = rd.GetBoolean(3);
        }
        if (stale)
        {
            await using var touch = db.CreateCommand("update batchrunner.api_keys set last_used_at = now() where id = @id");
            touch.Parameters.AddWithValue("id", id);
            await touch.ExecuteNonQueryAsync(ct);
        }
        return identity;
    }
}
