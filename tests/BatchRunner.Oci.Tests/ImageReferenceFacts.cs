namespace BatchRunner.Oci.Tests;

public sealed class ImageReferenceFacts
{
    private const string Hex = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    [Theory]
    [InlineData("python", "docker.io", "library/python", "latest", null)]
    [InlineData("python:3.12-slim", "docker.io", "library/python", "3.12-slim", null)]
    [InlineData("user/repo:tag", "docker.io", "user/repo", "tag", null)]
    [InlineData("docker.io/python", "docker.io", "library/python", "latest", null)]
    [InlineData("index.docker.io/library/python:3", "docker.io", "library/python", "3", null)]
    [InlineData("index.docker.io/user/x", "docker.io", "user/x", "latest", null)]
    [InlineData("localhost/x", "localhost", "x", "latest", null)]
    [InlineData("localhost:5000/x:1", "localhost:5000", "x", "1", null)]
    [InlineData("127.0.0.1:5000/demo/busybox:1.36", "127.0.0.1:5000", "demo/busybox", "1.36", null)]
    [InlineData("ghcr.io/org/team/app:v1.2.3", "ghcr.io", "org/team/app", "v1.2.3", null)]
    [InlineData("[::1]:5000/x", "[::1]:5000", "x", "latest", null)]
    [InlineData("Registry.Example/x", "Registry.Example", "x", "latest", null)]
    [InlineData("a/b-c__d.e---f/g_h", "docker.io", "a/b-c__d.e---f/g_h", "latest", null)]
    [InlineData("busybox:_x.y-Z", "docker.io", "library/busybox", "_x.y-Z", null)]
    public void Parse_NormalisesLikeDocker_WhenReferenceHasTagOrNone(string text, string registry, string repository, string? tag, string? digest)
    {
        var r = ImageReference.Parse(text);

        Assert.Equal(new ImageReference(registry, repository, tag, digest), r);
        Assert.Equal($"{registry}/{repository}", r.Name);
    }

    [Fact]
    public void Parse_KeepsDigestWithoutTag_WhenOnlyDigestGiven()
    {
        var r = ImageReference.Parse($"host.example:5000/ns/repo@sha256:{Hex}");

        Assert.Equal(new ImageReference("host.example:5000", "ns/repo", null, "sha256:" + Hex), r);
        Assert.Equal("sha256:" + Hex, r.ManifestReference);
        Assert.Equal($"host.example:5000/ns/repo@sha256:{Hex}", r.ToString());
    }

    [Fact]
    public void Parse_KeepsTagAndDigest_WhenBothGivenAndDigestDecides()
    {
        var r = ImageReference.Parse($"python:3.12@sha256:{Hex}");

        Assert.Equal("3.12", r.Tag);
        Assert.Equal("sha256:" + Hex, r.Digest);
        Assert.Equal("sha256:" + Hex, r.ManifestReference);
        Assert.Equal($"docker.io/library/python:3.12@sha256:{Hex}", r.ToString());
    }

    [Fact]
    public void ManifestReference_IsTag_WhenNoDigest()
    {
        Assert.Equal("latest", ImageReference.Parse("busybox").ManifestReference);
        Assert.Equal("1.36", ImageReference.Parse("busybox:1.36").ManifestReference);
    }

    [Theory]
    [InlineData("busybox", "docker.io/library/busybox:latest")]
    [InlineData("localhost:5000/a/b:c", "localhost:5000/a/b:c")]
    public void ToString_RoundTripsThroughParse(string text, string expected)
    {
        var r = ImageReference.Parse(text);
        Assert.Equal(expected, r.ToString());
        Assert.Equal(r, ImageReference.Parse(r.ToString()));
    }

    [Theory]
    [InlineData("", "reference is empty")]
    [InlineData("Foo", "repository name must be lowercase")]
    [InlineData("docker.io/Library/python", "repository name must be lowercase")]
    [InlineData("ubuntu:", "tag is empty")]
    [InlineData("ubuntu:-dash", "must start with a letter, digit or '_'")]
    [InlineData("ubuntu:a+b", "may only contain letters, digits")]
    [InlineData("python @sha256:x", "whitespace")]
    [InlineData(" python", "whitespace")]
    [InlineData("python\t", "whitespace")]
    [InlineData("foo/", "must not end with '/'")]
    [InlineData("/foo", "must not start with '/'")]
    [InlineData("foo//bar", "empty path component")]
    [InlineData("foo/-bar", "repository path component \"-bar\"")]
    [InlineData("foo/bar_", "repository path component \"bar_\"")]
    [InlineData("foo/a___b", "repository path component \"a___b\"")]
    [InlineData("foo/a..b", "repository path component \"a..b\"")]
    [InlineData("python@", "digest is empty")]
    [InlineData("python@sha256", "must have the form sha256:")]
    [InlineData("python@md5:d41d8cd98f00b204e9800998ecf8427e", "digest algorithm \"md5\" is not supported")]
    [InlineData("python@sha256:abc", "64 lowercase hexadecimal")]
    [InlineData("python@sha256:" + "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef", "64 lowercase hexadecimal")]
    [InlineData(Hex, "image ID")]
    [InlineData("my_host:5000/x", "not a valid host name")]
    [InlineData("host:port/x", "must be a number")]
    [InlineData("-host.io/x", "not a valid host name")]
    [InlineData("[::1/x", "unterminated IPv6")]
    [InlineData(":tag", "repository name is empty")]
    [InlineData("a/b@sha256:" + Hex + "@sha256:" + Hex, "64 lowercase hexadecimal")]
    public void TryParse_ReturnsPreciseError_WhenReferenceIsInvalid(string text, string expected)
    {
        Assert.False(ImageReference.TryParse(text, out var reference, out var error));

        Assert.Null(reference);
        Assert.StartsWith($"invalid image reference \"{text}\": ", error);
        Assert.Contains(expected, error);
    }

    [Fact]
    public void TryParse_ReportsUppercaseExactly_ForDockerExample()
    {
        ImageReference.TryParse("Foo", out _, out var error);
        Assert.Equal("invalid image reference \"Foo\": repository name must be lowercase", error);
    }

    [Fact]
    public void TryParse_RejectsTag_WhenLongerThan128Characters()
    {
        Assert.True(ImageReference.TryParse("x:" + new string('t', 128), out _, out _));
        Assert.False(ImageReference.TryParse("x:" + new string('t', 129), out _, out var error));
        Assert.Contains("tag must not be longer than 128 characters", error);
    }

    [Fact]
    public void TryParse_RejectsName_WhenLongerThan255Characters()
    {
        Assert.True(ImageReference.TryParse("a/" + new string('b', 253), out _, out _));
        Assert.False(ImageReference.TryParse("a/" + new string('b', 254), out _, out var error));
        Assert.Contains("longer than 255", error);
    }

    [Fact]
    public void Parse_ThrowsFormatExceptionWithMessage_WhenInvalid()
    {
        var ex = Assert.Throws<FormatException>(() => ImageReference.Parse("user/Repo"));
        Assert.Equal("invalid image reference \"user/Repo\": repository name must be lowercase", ex.Message);
    }
}
