using System.Security.Cryptography;
using System.Text;
using System.Xml.Linq;
using Microsoft.AspNetCore.DataProtection.XmlEncryption;

namespace BatchRunner.Server.Storage;

/// <summary>
/// The key that encrypts the Data Protection key ring before it is stored (<c>BatchRunner:SecretsKey</c>, the same on
/// every node): with it, the database alone (a dump, a backup, a read-only role) does not decrypt the jobs' secrets.
/// AES-256-GCM with a key derived from the setting by HKDF-SHA256.
/// </summary>
public sealed class KeyRingKey
{
    public const int MinLength = 32;

    internal KeyRingKey(string secret) =>
        Key = HKDF.DeriveKey(HashAlgorithmName.SHA256, Encoding.UTF8.GetBytes(secret), 32, info: Encoding.UTF8.GetBytes("BatchRunner key ring v1"));

    internal byte[] Key { get; }
}

/// <summary>Encrypts each key of the ring (its <c>masterKey</c> element) with <see cref="KeyRingKey"/>.</summary>
internal sealed class KeyRingEncryptor(KeyRingKey key) : IXmlEncryptor
{
    public const string ElementName = "batchrunnerEncryptedKey";

    public EncryptedXmlInfo Encrypt(XElement plaintextElement)
    {
        var plaintext = Encoding.UTF8.GetBytes(plaintextElement.ToString(SaveOptions.DisableFormatting));
        var nonce = RandomNumberGenerator.GetBytes(AesGcm.NonceByteSizes.MaxSize);
        var sealedBytes = new byte[nonce.Length + plaintext.Length + AesGcm.TagByteSizes.MaxSize];
        nonce.CopyTo(sealedBytes, 0);
        using (var aes = new AesGcm(key.Key, AesGcm.TagByteSizes.MaxSize))
            aes.Encrypt(nonce, plaintext, sealedBytes.AsSpan(nonce.Length, plaintext.Length), sealedBytes.AsSpan(nonce.Length + plaintext.Length));
        return new EncryptedXmlInfo(new XElement(ElementName, new XAttribute("alg", "AES-256-GCM"), Convert.ToBase64String(sealedBytes)),
            typeof(KeyRingDecryptor));
    }
}

/// <summary>Decrypts what <see cref="KeyRingEncryptor"/> made; Data Protection creates it by type name with the host's services.</summary>
internal sealed class KeyRingDecryptor(IServiceProvider services) : IXmlDecryptor
{
    public XElement Decrypt(XElement encryptedElement)
    {
        var key = services.GetService<KeyRingKey>()
            ?? throw new CryptographicException("the key ring is encrypted, but BatchRunner:SecretsKey (BATCHRUNNER_SECRETS_KEY) is not set on this node");
        var sealedBytes = Convert.FromBase64String(encryptedElement.Value);
        var nonceSize = AesGcm.NonceByteSizes.MaxSize;
        var tagSize = AesGcm.TagByteSizes.MaxSize;
        var plaintext = new byte[sealedBytes.Length - nonceSize - tagSize];
        using (var aes = new AesGcm(key.Key, tagSize))
            aes.Decrypt(sealedBytes.AsSpan(0, nonceSize), sealedBytes.AsSpan(nonceSize, plaintext.Length), sealedBytes.AsSpan(nonceSize + plaintext.Length), plaintext);
        return XElement.Parse(Encoding.UTF8.GetString(plaintext));
    }
}
