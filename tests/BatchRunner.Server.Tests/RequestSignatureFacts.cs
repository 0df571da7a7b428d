using BatchRunner.Server.Nodes;

namespace BatchRunner.Server.Tests;

/// <summary>Node-to-node request signatures: bound to method, path and query, valid for seconds and once.</summary>
public sealed class RequestSignatureFacts
{
    private const string Secret = "0123456789ABCDEF";
    private const string Logs = "/internal/v1/jobs/0193a7c4-aaaa-7bbb-8ccc-000000000001/logs?stream=stdout";
    private readonly ManualTime _time = new(DateTimeOffset.Parse("2026-11-29T12:00:00Z"));

    [Fact]
    public void Check_AcceptsAFreshSignature_Once()
    {
        var signature = new RequestSignature(Secret, _time);
        var token = signature.Sign("GET", Logs);
        Assert.Equal(SignatureCheck.Valid, signature.Check(token, "GET", Logs));
        Assert.Equal(SignatureCheck.Replayed, signature.Check(token, "GET", Logs));
        // Two requests for the same thing in the same second are two signatures.
        Assert.Equal(SignatureCheck.Valid, signature.Check(signature.Sign("GET", Logs), "GET", Logs));
    }

    [Fact]
    public void Check_RefusesASignature_OnceItsSecondsArePast()
    {
        var signer = new RequestSignature(Secret, _time);
        var token = signer.Sign("GET", Logs);
        var node = new RequestSignature(Secret, _time);
        _time.Now += RequestSignature.Validity + TimeSpan.FromSeconds(1);
        Assert.Equal(SignatureCheck.Expired, node.Check(token, "GET", Logs));
        // Clocks that are a little apart are fine, in both directions.
        _time.Now -= TimeSpan.FromSeconds(2);
        Assert.Equal(SignatureCheck.Valid, node.Check(token, "GET", Logs));
        Assert.Equal(SignatureCheck.Valid, new RequestSignature(Secret, new ManualTime(_time.Now - RequestSignature.Validity)).Check(signer.Sign("GET", Logs), "GET", Logs));
        Assert.Equal(SignatureCheck.Expired, new RequestSignature(Secret, new ManualTime(_time.Now - RequestSignature.Validity - TimeSpan.FromSeconds(5))).Check(signer.Sign("GET", Logs), "GET", Logs));
    }

    [Theory]
    [InlineData("GET", "/internal/v1/jobs/0193a7c4-aaaa-7bbb-8ccc-000000000002/logs?stream=stdout")] // another job
    [InlineData("GET", "/internal/v1/jobs/0193a7c4-aaaa-7bbb-8ccc-000000000001/logs?stream=stderr")] // another query
    [InlineData("GET", "/internal/v1/jobs/0193a7c4-aaaa-7bbb-8ccc-000000000001/outputs/secret.txt")]
    [InlineData("DELETE", Logs)]
    public void Check_RefusesASignature_ForAnotherRequest(string method, string pathAndQuery)
    {
        var signature = new RequestSignature(Secret, _time);
        Assert.Equal(SignatureCheck.Mismatch, signature.Check(signature.Sign("GET", Logs), method, pathAndQuery));
    }

    [Fact]
    public void Check_RefusesTamperedAndForeignSignatures()
    {
        var signature = new RequestSignature(Secret, _time);
        var token = signature.Sign("GET", Logs);
        var parts = token.Split('.');
        // A later time, another nonce, a flipped MAC character, another cluster's key.
        Assert.Equal(SignatureCheck.Mismatch, signature.Check($"{parts[0]}.{long.Parse(parts[1]) + 10}.{parts[2]}.{parts[3]}", "GET", Logs));
        Assert.Equal(SignatureCheck.Mismatch, signature.Check($"{parts[0]}.{parts[1]}.AAAA{parts[2][4..]}.{parts[3]}", "GET", Logs));
        Assert.Equal(SignatureCheck.Mismatch, signature.Check($"{parts[0]}.{parts[1]}.{parts[2]}.{(parts[3][0] == 'A' ? 'B' : 'A')}{parts[3][1..]}", "GET", Logs));
        Assert.Equal(SignatureCheck.Mismatch, new RequestSignature("another-cluster", _time).Check(token, "GET", Logs));
        Assert.Equal(SignatureCheck.Valid, signature.Check(token, "GET", Logs)); // none of that spent it
    }

    [Theory]
    [InlineData(null, SignatureCheck.Missing)]
    [InlineData("", SignatureCheck.Missing)]
    [InlineData("0123456789ABCDEF", SignatureCheck.Malformed)] // the secret itself, as the old header carried it
    [InlineData("v1.notanumber.abc.def", SignatureCheck.Malformed)]
    [InlineData("v2.1.abc.def", SignatureCheck.Malformed)]
    [InlineData("v1.1.abc.def.extra", SignatureCheck.Malformed)]
    public void Check_RefusesMissingAndMalformedHeaders(string? token, SignatureCheck expected) =>
        Assert.Equal(expected, new RequestSignature(Secret, _time).Check(token, "GET", Logs));

    private sealed class ManualTime(DateTimeOffset now) : TimeProvider
    {
        public DateTimeOffset Now { get; set; } = now;
        public override DateTimeOffset GetUtcNow() => Now;
    }
}
