using System.Text.Json;

namespace BatchRunner.Cli.Tests;

/// <summary><c>apikeys</c> and <c>--secret-env</c> against a server that has keys, tenants and secrets (issue 18).</summary>
[Collection(CliCollection.Name)]
public sealed class ApiKeyCommandFacts(CliFixture f)
{
    [Fact]
    public async Task ApiKeys_CreateListAndRemove_AndAKeySeesOnlyItsTenant()
    {
        var tenant = "cli-" + Guid.NewGuid().ToString("N")[..8];
        var created = await f.RunAsync("apikeys", "create", "--name", "cli test", "--tenant", tenant, "--role", "user", "-o", "json");
        Assert.Equal(0, created.ExitCode);
        var key = JsonDocument.Parse(created.Stdout).RootElement;
        var (id, secret) = (key.GetProperty("id").GetString()!, key.GetProperty("key").GetString()!);
        var listed = await f.RunAsync("apikeys", "list");
        Assert.Contains(id, listed.Stdout);
        Assert.Contains(tenant, listed.Stdout);
        Assert.DoesNotContain(secret, listed.Stdout);

        var asUser = f.Env(("BATCHRUNNER_API_KEY", secret));
        // The secret reaches the job (its length is printed, never the value) and is never printed back.
        var run = await CliProcess.RunAsync(["run", f.Busybox, "--secret-env", "TOKEN=cli-secret-value-42", "--", "sh", "-c", "printf %s \"$TOKEN\" | wc -c"], asUser);
        Assert.Equal(0, run.ExitCode);
        Assert.Equal("19", run.Stdout.Trim());
        Assert.DoesNotContain("cli-secret-value-42", run.Stderr);
        var mine = await CliProcess.RunAsync(["list", "-o", "json"], asUser);
        var items = JsonDocument.Parse(mine.Stdout).RootElement.GetProperty("items");
        Assert.Equal(1, items.GetArrayLength());
        Assert.Equal(tenant, items[0].GetProperty("tenant").GetString());
        Assert.DoesNotContain("cli-secret-value-42", mine.Stdout);

        Assert.Equal(0, (await f.RunAsync("apikeys", "rm", id)).ExitCode);
        var refused = await CliProcess.RunAsync(["list"], asUser);
        Assert.Equal(1, refused.ExitCode);
        Assert.Contains("(401", refused.Stderr);
    }
}
