using System.CommandLine;
using System.Text.Json.Nodes;
using BatchRunner.Cli.Jobs;

namespace BatchRunner.Cli.Commands;

/// <summary>
/// <c>batchrunner run IMAGE [-- CMD...]</c>: submit, follow the logs live and exit with the job's exit code, like
/// <c>docker run</c>. Ctrl-C cancels the job.
/// </summary>
internal static class RunCommand
{
    private static readonly Argument<string> Image = new("image") { Description = "container image, e.g. python:3.12-slim or registry:5000/team/tool:1" };
    private static readonly Argument<string[]> Cmd = new("command") { Description = "the command and its arguments (after --); default: the image's", Arity = ArgumentArity.ZeroOrMore };
    private static readonly Option<double?> Cpus = new("--cpus") { Description = "CPUs (fractional allowed) [server default: 1]" };
    private static readonly Option<string?> Memory = new("--memory", "-m") { Description = "memory limit: 512Mi, 2Gi or bytes [server default: 512Mi]" };
    private static readonly Option<int?> Gpus = new("--gpus") { Description = "GPUs for the job alone" };
    private static readonly Option<string?> Disk = new("--disk") { Description = "disk limit for what the job writes: 10Gi (resources.disk)" };
    private static readonly Option<string[]> Env = new("--env", "-e") { Description = "environment variable K=V (K alone: its value here); repeatable", AllowMultipleArgumentsPerToken = false };
    private static readonly Option<string[]> SecretEnv = new("--secret-env") { Description = "secret environment variable K=V (K alone: its value here), never shown back (secretEnv); repeatable" };
    private static readonly Option<string[]> Input = new("--input", "-i") { Description = "file or directory to put under /inputs (a directory as /inputs/NAME/...); repeatable" };
    private static readonly Option<string?> Timeout = new("--timeout") { Description = "time limit: seconds, or 90s, 15m, 2h [server default: 1h]" };
    private static readonly Option<string?> Queue = new("--queue") { Description = "queue [server default: default]" };
    private static readonly Option<string?> Network = new("--network") { Description = "none (loopback only), bridge or host [server default: none]" };
    private static readonly Option<string?> Name = new("--name") { Description = "display name" };
    private static readonly Option<string[]> Label = new("--label", "-l") { Description = "label K=V; repeatable" };
    private static readonly Option<string?> OutputDir = new("--output-dir") { Description = "download the job's /outputs here when it ends (sha256 checked)" };
    private static readonly Option<bool> Detach = new("--detach", "-d") { Description = "print the job id and return at once" };

    public static Command Create()
    {
        var command = new Command("run", "Run a job and follow it: progress, live logs, then exit with the job's exit code (137 OOM-killed, 124 timed out, 125 could not start, 130 cancelled)")
        {
            Image, Cmd, Cpus, Memory, Gpus, Disk, Env, SecretEnv, Input, Timeout, Queue, Network, Name, Label, OutputDir, Detach,
        };
        // Everything before the job exists (unreachable server, refused spec) is "could not start", as for docker run.
        CliContext.SetAction(command, RunAsync, errorExitCode: ExitCodes.CouldNotStart);
        return command;
    }

    private static async Task<int> RunAsync(CliContext ctx, CancellationToken ct)
    {
        var spec = BuildSpec(ctx);
        var inputs = (ctx.Get(Input) ?? []).Select(Path.GetFullPath).ToList();
        var job = await JobSession.SubmitAsync(ctx, spec, inputs, ct);
        var watch = ctx.Get(Detach) ? Watch.Detach : Watch.Follow;
        return await JobSession.WatchAsync(ctx, job, watch, cancelOnInterrupt: true, ctx.Get(OutputDir), ct);
    }

    /// <summary>The job spec the flags describe, in the API's shape; unset flags are left to the server's defaults.</summary>
    internal static JsonObject BuildSpec(CliContext ctx)
    {
        var spec = new JsonObject { ["image"] = ctx.Get(Image) };
        if (ctx.Get(Cmd) is { Length: > 0 } cmd) spec["command"] = new JsonArray(cmd.Select(c => (JsonNode?)JsonValue.Create(c)).ToArray());
        if (KeyValues.ToObject(ctx.Get(Env), "--env", ctx.Environment) is { } env) spec["env"] = env;
        if (KeyValues.ToObject(ctx.Get(SecretEnv), "--secret-env", ctx.Environment) is { } secrets) spec["secretEnv"] = secrets;
        var resources = new JsonObject();
        if (ctx.Get(Cpus) is { } cpus) resources["cpus"] = cpus;
        if (ctx.Get(Memory) is { } memory) resources["memory"] = memory;
        if (ctx.Get(Gpus) is { } gpus) resources["gpus"] = gpus;
        if (ctx.Get(Disk) is { } disk) resources["disk"] = disk;
        if (resources.Count > 0) spec["resources"] = resources;
        if (ctx.Get(Timeout) is { } timeout) spec["timeoutSeconds"] = KeyValues.Seconds(timeout, "--timeout");
        if (ctx.Get(Queue) is { } queue) spec["queue"] = queue;
        if (ctx.Get(Network) is { } network) spec["network"] = network;
        if (ctx.Get(Name) is { } name) spec["name"] = name;
        if (KeyValues.ToObject(ctx.Get(Label), "--label") is { } labels) spec["labels"] = labels;
        return spec;
    }
}
