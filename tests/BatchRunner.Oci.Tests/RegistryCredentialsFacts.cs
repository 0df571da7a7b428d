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

        var creds = DockerConfigCredentials.Parse(json).Auths;

        Assert.Equal(3, creds.Count);
        Assert.Equal(new RegistryCredential("docker.io", "alice", "p4ss:with:colons"), creds[0]);
        Assert.Equal(new RegistryCredential("ghcr.io", "bob", "", "refresh-me"), creds[1]);
        Assert.Equal(new RegistryCredential("127.0.0.1:5000", "carol", "pw"), creds[2]);
    }

    [Fact]
    public void Load_ReturnsNothing_WhenFileIsMissing()
    {
        var config = DockerConfigCredentials.Load("/nonexistent/docker/config.json");

        Assert.Empty(config.Auths);
        Assert.Null(config.CredsStore);
        Assert.Empty(config.CredHelpers);
    }

    [Fact]
    public void Parse_ReadsCredsStoreAndCredHelpers_WithNormalizedRegistryKeys()
    {
        var json = """
            {
              "auths": { "https://index.docker.io/v1/": {}, "ghcr.io": {} },
              "credsStore": "pass",
              "credHelpers": {
                "123.dkr.ecr.eu-west-1.amazonaws.com": "ecr-login",
                "https://GCR.io": "gcloud",
                "index.docker.io": "desktop",
                "blank.example": ""
              }
            }
            """;

        var config = DockerConfigCredentials.Parse(json);

        Assert.Empty(config.Auths); // entries without a credential: "docker login" put the secret in the store
        Assert.Equal("pass", config.CredsStore);
        Assert.Equal(3, config.CredHelpers.Count);
        Assert.Equal("ecr-login", config.CredHelpers["123.dkr.ecr.eu-west-1.amazonaws.com"]);
        Assert.Equal("gcloud", config.CredHelpers["gcr.io"]);
        Assert.Equal("desktop", config.CredHelpers["docker.io"]);
    }

    [Fact]
    public void Resolve_PrefersCredHelperThenInlineAuthThenCredsStore()
    {
        var config = DockerConfigCredentials.Parse("""
            {
              "auths": {
                "gcr.io": { "auth": "dTpw" },
                "inline.example:5000": { "auth": "dTpw" },
                "stored.example": {}
              },
              "credsStore": "pass",
              "credHelpers": { "gcr.io": "gcloud" }
            }
            """);

        Assert.Equal((null, "gcloud"), config.Resolve("gcr.io"));
        Assert.Equal((new RegistryCredential("inline.example:5000", "u", "p"), null), config.Resolve("inline.example:5000"));
        Assert.Equal((null, "pass"), config.Resolve("stored.example"));
        Assert.Equal((null, "pass"), config.Resolve("never-logged-in.example"));
    }

    [Fact]
    public void Resolve_GivesNeitherCredentialNorHelper_WhenConfigHasNoStore()
    {
        var config = DockerConfigCredentials.Parse("""{ "auths": { "a.example": { "auth": "dTpw" } }, "credHelpers": { "b.example": "gcloud" } }""");

        Assert.Equal((null, null), config.Resolve("c.example"));
        Assert.Equal((null, "gcloud"), config.Resolve("https://b.example/v1/"));
    }

    [Theory]
    [InlineData("""{ "credsStore": "../../bin/sh" }""", "docker config: credsStore: \"../../bin/sh\" is not a credential helper name (docker-credential-<name>)")]
    [InlineData("""{ "credHelpers": { "r.example": "a/b" } }""", "docker config: credHelpers.r.example: \"a/b\" is not a credential helper name (docker-credential-<name>)")]
    [InlineData("""{ "credHelpers": { "r.example": "-v" } }""", "docker config: credHelpers.r.example: \"-v\" is not a credential helper name (docker-credential-<name>)")]
    public void Parse_Throws_WhenHelperNameIsNotAPlainName(string json, string message)
    {
        var e = Assert.Throws<FormatException>(() => DockerConfigCredentials.Parse(json));

        Assert.Equal(message, e.Message);
    }

    [Fact]
    public void ServerUrlFor_IsDockersIndexUrlForDockerHub_AndTheHostOtherwise()
    {
        Assert.Equal("https://index.docker.io/v1/", CredentialHelper.ServerUrlFor("docker.io"));
        Assert.Equal("127.0.0.1:5000", CredentialHelper.ServerUrlFor("127.0.0.1:5000"));
        Assert.Equal("gcr.io", CredentialHelper.ServerUrlFor("gcr.io"));
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
