using System.Text.Json;
using BatchRunner.Core;

namespace BatchRunner.Core.Tests;

public sealed class SecretsValidatorFacts
{
    [Fact]
    public void Validate_KeepsSecretEnv_OutOfTheSerialisedSpec()
    {
        var r = JobSpecValidator.Validate(new JobSubmission
        {
            Image = "busybox",
            Env = new() { ["PLAIN"] = "1" },
            SecretEnv = new() { ["TOKEN"] = "hidden-1", ["A_KEY"] = "hidden-2" },
            Notify = new NotifySubmission { Url = "https://hooks.example.com/x", Secret = "0123456789abcdef-secret" },
        });
        Assert.True(r.IsValid, string.Join("; ", r.Errors.SelectMany(e => e.Value)));
        Assert.Equal("hidden-1", r.Spec!.SecretEnv["TOKEN"]);
        Assert.Equal(["A_KEY", "TOKEN"], r.Spec.SecretEnvNames);
        var json = JsonSerializer.Serialize(r.Spec, new JsonSerializerOptions(JsonSerializerDefaults.Web));
        Assert.DoesNotContain("hidden", json);
        Assert.DoesNotContain("0123456789abcdef-secret", json);
        Assert.Contains("https://hooks.example.com/x", json);
        Assert.Contains("A_KEY", json);
    }

    [Theory]
    [InlineData("not a url", "notify.url")]
    [InlineData("file:///etc/passwd", "notify.url")]
    [InlineData("https://u:p@example.com/", "notify.url")]
    [InlineData("https://example.com/#frag", "notify.url")]
    [InlineData("", "notify.url")]
    public void Validate_RefusesWebhookUrls_ThatAreNotPlainHttp(string url, string field)
    {
        var r = JobSpecValidator.Validate(new JobSubmission { Image = "busybox", Notify = new NotifySubmission { Url = url } });
        Assert.Contains(field, r.Errors.Keys);
    }

    [Fact]
    public void Validate_RefusesAShortWebhookSecret()
    {
        var r = JobSpecValidator.Validate(new JobSubmission { Image = "busybox", Notify = new NotifySubmission { Url = "https://example.com/h", Secret = "short" } });
        Assert.Equal(["notify.secret"], r.Errors.Keys);
    }

    [Theory]
    [InlineData(256 * 1024 - 2, true)]    // "x" + NUL of the command, and the args element with its NUL: exactly 256 KiB
    [InlineData(256 * 1024 - 1, false)]
    public void Validate_BoundsCommandArgsAndEnv_AsExecveDoes(int argBytes, bool valid)
    {
        var r = JobSpecValidator.Validate(new JobSubmission { Image = "busybox", Command = ["x"], Args = [new string('a', argBytes - 1)] });
        Assert.Equal(valid, r.IsValid);
        if (!valid) Assert.Equal(["args"], r.Errors.Keys);
    }

    [Fact]
    public void Validate_CountsSecretEnv_InTheExecveBudget()
    {
        var r = JobSpecValidator.Validate(new JobSubmission
        {
            Image = "busybox",
            Env = new() { ["A"] = new string('a', 100 * 1024) },
            SecretEnv = new() { ["S"] = new string('s', 200 * 1024) },
        });
        Assert.Equal(["secretEnv"], r.Errors.Keys);
        Assert.DoesNotContain("sss", r.Errors["secretEnv"][0]);
    }

    [Fact]
    public void Validate_RefusesPidsAboveTheMaximum()
    {
        var r = JobSpecValidator.Validate(new JobSubmission { Image = "busybox", Resources = new ResourceSubmission { Pids = JobDefaults.MaxPids + 1 } });
        Assert.Equal(["resources.pids"], r.Errors.Keys);
        Assert.True(JobSpecValidator.Validate(new JobSubmission { Image = "busybox", Resources = new ResourceSubmission { Pids = JobDefaults.MaxPids } }).IsValid);
    }
}
