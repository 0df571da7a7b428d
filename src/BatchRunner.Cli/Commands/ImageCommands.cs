using System.CommandLine;
using System.Net.Http.Headers;
using System.Text.Json;
using BatchRunner.Cli.Http;
using BatchRunner.Cli.Output;

namespace BatchRunner.Cli.Commands;

/// <summary><c>images import|list|rm</c>: the node's image store, for air-gapped sites.</summary>
internal static class ImageCommands
{
    public static Command Create()
    {
        var images = new Command("images", "Images in the server's store: import archives for air-gapped sites, list, remove");
        images.Add(Import());
        images.Add(List());
        images.Add(Remove());
        return images;
    }

    /// <summary>An image name as a path: "/" kept (the route takes the rest of the path), each segment escaped.</summary>
    private static string NamePath(string name) => string.Join('/', name.Split('/').Select(ApiClient.Escape));

    private static Command Import()
    {
        var file = new Argument<string>("file") { Description = "OCI image layout or `docker save` archive (tar, tar.gz, tar.zst); - reads standard input" };
        var name = new Option<string>("--name") { Description = "the name to register it as, e.g. examples/python-numpy:1; jobs use it with pullPolicy ifNotPresent or never", Required = true };
        var command = new Command("import", "Import an image archive into the server's store (POST /api/v1/images)") { file, name };
        CliContext.SetAction(command, async (ctx, ct) =>
        {
            var path = ctx.Get(file)!;
            Stream body;
            try
            {
                body = path == "-" ? Console.OpenStandardInput() : File.OpenRead(path);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new CliException($"cannot read {path}: {e.Message}", exitCode: ExitCodes.Usage);
            }
            await using var _ = body;
            using var request = new HttpRequestMessage(HttpMethod.Post, "api/v1/images?name=" + ApiClient.Escape(ctx.Get(name)!))
            {
                Content = new StreamContent(body, 1 << 20) { Headers = { ContentType = new MediaTypeHeaderValue("application/octet-stream") } },
            };
            var image = await ctx.Api.SendForJsonAsync(request, ct, timeout: false);
            if (ctx.Terminal.Json) Terminal.WriteJson(image);
            else ctx.Terminal.Info($"imported {image.GetProperty("name").GetString()} ({image.GetProperty("digest").GetString()}, {Units.Bytes(image.GetProperty("sizeBytes").GetInt64())})", "green");
            return ExitCodes.Success;
        });
        return command;
    }

    private static Command List()
    {
        var command = new Command("list", "List the images in the server's store");
        command.Aliases.Add("ls");
        CliContext.SetAction(command, async (ctx, ct) =>
        {
            var list = await ctx.Api.GetJsonAsync("api/v1/images", ct);
            if (ctx.Terminal.Json) Terminal.WriteJson(list);
            else Terminal.WriteTable(["NAME", "DIGEST", "SIZE", "LAST USED"], list.EnumerateArray().Select(i => (IReadOnlyList<string?>)
            [
                i.GetProperty("name").GetString(), Short(i.GetProperty("digest").GetString()),
                Units.Bytes(i.GetProperty("sizeBytes").GetInt64()), i.GetProperty("lastUsed").GetDateTimeOffset().ToLocalTime().ToString("yyyy-MM-dd HH:mm"),
            ]));
            return ExitCodes.Success;
        });
        return command;
    }

    private static Command Remove()
    {
        var name = new Argument<string>("name") { Description = "image name as listed" };
        var command = new Command("rm", "Remove an image from the server's store (refused while a queued or running job uses it)") { name };
        CliContext.SetAction(command, async (ctx, ct) =>
        {
            await ctx.Api.SendJsonAsync(HttpMethod.Delete, "api/v1/images/" + NamePath(ctx.Get(name)!), null, ct);
            if (ctx.Terminal.Json) Terminal.WriteJson(JsonSerializer.SerializeToElement(new { name = ctx.Get(name), deleted = true }));
            else ctx.Terminal.Info($"removed {ctx.Get(name)}");
            return ExitCodes.Success;
        });
        return command;
    }

    private static string? Short(string? digest) => digest is { Length: > 19 } d ? d[..19] : digest;
}
