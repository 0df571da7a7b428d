using BatchRunner.Oci.Registry;

namespace BatchRunner.Oci.Tests;

public sealed class RegistryCredentialsFacts
{
    [Fact]
    public void Parse_ReadsAuthAndIdentityToken_WhenDockerConfigHasAuths()
    {
        var json = """
            {
              "auths": {
                "https://index.docker.io/v1/": { "auth": "YWxpY2U6cDRzczp3aXRoOmNvbG9ucw==" },
                "ghcr.io": { "auth": "Ym9iOg==", "identitytoken": "refresh-me" },
                "127.0.0.1:5000": { "username": "carol", "password": "pw" },
                "empty.example": {}
              },
              "credsStore": "desktop"
            }
            """;

        var creds = DockerConfigCredentials.Parse(json);

        Assert.Equal(3, creds.Count);
        Assert.Equal(new RegistryCredential("docker.io", "alice", "p4ss:with:colons"), creds[0]);
        Assert.Equal(new RegistryCredential("ghcr.io", "bob", "", "refresh-me"), creds[1]);
        Assert.Equal(new RegistryCredential("127.0.0.1:5000", "carol", "pw"), creds[2]);
    }

    [Fact]
    public void Load_ReturnsNothing_WhenFileIsMissing()
    {
        Assert.Empty(DockerConfigCredentials.Load("/nonexistent/docker/config.json"));
    }

    [Fact]
    public void Parse_ThrowsWithoutEchoingSecrets_WhenAuthIsNotBase64()
    {
        var e = Assert.Throws<FormatException>(() => DockerConfigCredentials.Parse("""{"auths":{"r.example":{"auth":"not base64!!"}}}"""));

        Assert.Equal("docker config: auths.r.example.auth is not valid base64", e.Message);
    }

    [Fact]
    public void ToString_HidesPassword()
    {
        Assert.DoesNotContain("hunter2", new RegistryCredential("r", "u", "hunter2").ToString());
    }

    [Fact]
    public void Parse_ReadsQuotedParametersWithCommas_WhenChallengeIsBearer()
    {
        var c = AuthChallenge.Parse("Bearer", "realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\",scope=\"repository:library/busybox:pull,push\"");

        Assert.True(c.IsBearer);
        Assert.Equal("https://auth.docker.io/token", c.Realm);
        Assert.Equal("registry.docker.io", c.Service);
        Assert.Equal("repository:library/busybox:pull,push", c.Scope);
    }

    [Fact]
    public void Parse_ReadsRealm_WhenChallengeIsBasic()
    {
        var c = AuthChallenge.Parse("Basic", "realm=test-registry");

        Assert.True(c.IsBasic);
        Assert.Equal("test-registry", c.Realm);
    }
}
