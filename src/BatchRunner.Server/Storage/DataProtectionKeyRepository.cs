using Microsoft.AspNetCore.DataProtection;
using System.Xml.Linq;
using Microsoft.AspNetCore.DataProtection.Repositories;
using Npgsql;

namespace BatchRunner.Server.Storage;

/// <summary>
/// ASP.NET Core Data Protection's key ring in batchrunner.data_protection_keys, so that a secret one node encrypts
/// (at submission) any other node decrypts (the worker that runs the job). Data Protection creates, rotates and
/// expires keys itself and only ever adds elements; a payload names the key that encrypted it, and a node that
/// does not know that key yet reloads the ring before it gives up.
/// </summary>
/// <remarks>
/// Data Protection calls these methods synchronously (it caches the ring in memory and rereads it at most every
/// few hours, or when it meets an unknown key), so the synchronous database calls here are rare.
/// Whoever can read this table can decrypt the jobs' secrets: keep the connection string as secret as they are.
/// </remarks>
public sealed class DataProtectionKeyRepository(NpgsqlDataSource db) : IXmlRepository
{
    public IReadOnlyCollection<XElement> GetAllElements()
    {
        using var cmd = db.CreateCommand("select xml from batchrunner.data_protection_keys order by id");
        using var rd = cmd.ExecuteReader();
        var elements = new List<XElement>();
        while (rd.Read()) elements.Add(XElement.Parse(rd.GetString(0)));
        return elements;
    }

    public void StoreElement(XElement element, string friendlyName)
    {
        using var cmd = db.CreateCommand("insert into batchrunner.data_protection_keys (friendly_name, xml) values (@n, @x)");
        cmd.Parameters.AddWithValue("n", friendlyName);
        cmd.Parameters.AddWithValue("x", element.ToString(SaveOptions.DisableFormatting));
        cmd.ExecuteNonQuery();
    }
}

public static class DataProtectionServices
{
    /// <summary>Data Protection with its key ring in the job database (one ring for the whole cluster), for the
    /// jobs' secrets and the dashboard's anti-forgery tokens. With <paramref name="secretsKey"/>, the ring's keys are
    /// stored encrypted with it (<see cref="KeyRingKey"/>); without, they are stored as they are, on purpose (the
    /// database then holds what decrypts the secrets: README, Secrets).</summary>
    public static IServiceCollection AddBatchRunnerDataProtection(this IServiceCollection services, string? secretsKey)
    {
        services.AddDataProtection().SetApplicationName("BatchRunner");
        var key = string.IsNullOrEmpty(secretsKey) ? null : new KeyRingKey(secretsKey);
        if (key is not null) services.AddSingleton(key);
        services.AddOptions<Microsoft.AspNetCore.DataProtection.KeyManagement.KeyManagementOptions>()
            .Configure<NpgsqlDataSource>((o, db) =>
            {
                o.XmlRepository = new DataProtectionKeyRepository(db);
                o.XmlEncryptor = key is null ? new Microsoft.AspNetCore.DataProtection.XmlEncryption.NullXmlEncryptor() : new KeyRingEncryptor(key);
            });
        services.AddSingleton<JobSecretStore>();
        services.AddSingleton<IJobSecrets>(sp => sp.GetRequiredService<JobSecretStore>());
        return services;
    }
}
