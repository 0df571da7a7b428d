using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Nodes;
using BatchRunner.Cli.Http;
using BatchRunner.Cli.Output;

namespace BatchRunner.Cli.Commands;

/// <summary>
/// <c>apikeys create|list|rm</c> against <c>/api/v1/apikeys</c> (the contract of issue 18: <c>{ name, tenant, role }</c> in,
/// <c>{ id, name, tenant, role, createdAt, key }</c> out, the key shown only once). A server without it answers that
/// it has no such endpoint.
/// </summary>
internal static class ApiKeyCommands
{
    public static Command Create()
    {
        var keys = new Command("apikeys", "API keys with tenants and roles (admin only)");
        keys.Add(CreateKey());
        keys.Add(List());
        keys.Add(Remove());
        return keys;
    }

    private static Command CreateKey()
    {
        var name = new Option<string>("--name") { Description = "what the key is for", Required = true };
        var tenant = new Option<string?>("--tenant") { Description = "tenant whose jobs the key reaches [server default: default]" };
        var role = new Option<string>("--role") { Description = "admin, user or viewer", DefaultValueFactory = _ => "user" };
        role.AcceptOnlyFromAmong("admin", "user", "viewer");
        var command = new Command("create", "Create a key; its secret is printed only this once") { name, tenant, role };
        CliContext.SetAction(command, async (ctx, ct) =>
        {
            var body = new JsonObject { ["name"] = ctx.Get(name), ["role"] = ctx.Get(role) };
            if (ctx.Get(tenant) is { } t) body["tenant"] = t;
            var key = await ctx.Api.PostJsonAsync("api/v1/apikeys", body, ct);
            if (ctx.Terminal.Json) Terminal.WriteJson(key);
            else
            {
                Console.Out.WriteLine(key.GetProperty("key").GetString());
                ctx.Terminal.Info($"created key {key.GetProperty("id")} ({ctx.Get(role)}); the secret above is not shown again");
            }
            return ExitCodes.Success;
        });
        return command;
    }

    private static Command List()
    {
        var command = new Command("list", "List keys (without their secrets)");
        command.Aliases.Add("ls");
        CliContext.SetAction(command, async (ctx, ct) =>
        {
            var list = await ctx.Api.GetJsonAsync("api/v1/apikeys", ct);
            if (ctx.Terminal.Json) Terminal.WriteJson(list);
            else Terminal.WriteTable(["ID", "NAME", "TENANT", "ROLE", "CREATED"], list.EnumerateArray().Select(k => (IReadOnlyList<string?>)
                [Text(k, "id"), Text(k, "name"), Text(k, "tenant"), Text(k, "role"), Text(k, "createdAt")]));
            return ExitCodes.Success;
        });
        return command;
    }

    private static Command Remove()
    {
        var id = new Argument<string>("id") { Description = "key id" };
        var command = new Command("rm", "Revoke a key") { id };
        CliContext.SetAction(command, async (ctx, ct) =>
        {
            await ctx.Api.SendJsonAsync(HttpMethod.Delete, "api/v1/apikeys/" + ApiClient.Escape(ctx.Get(id)!), null, ct);
            if (ctx.Terminal.Json) Terminal.WriteJson(JsonSerializer.SerializeToElement(new { id = ctx.Get(id), revoked = true }));
            else ctx.Terminal.Info($"revoked key {ctx.Get(id)}");
            return ExitCodes.Success;
        });
        return command;
    }

    internal static string? Text(JsonElement e, string name) =>
        e.TryGetProperty(name, out var v) ? v.ValueKind == JsonValueKind.String ? v.GetString() : v.ValueKind == JsonValueKind.Null ? null : v.GetRawText() : null;
}
