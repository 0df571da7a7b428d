using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Nodes;
using BatchRunner.Cli.Http;
using BatchRunner.Cli.Output;

namespace BatchRunner.Cli.Commands;

/// <summary>
/// <c>schedules create|list|get|pause|resume|update|trigger|rm</c> against <c>/api/v1/schedules</c> (the contract of issue 12:
/// <c>{ name, cron, timeZone, job, concurrency }</c>; PATCH pauses, resumes, or sets a new cron or spec). Pausing sends
/// <c>{"paused": true|false}</c>.
/// </summary>
internal static class ScheduleCommands
{
    public static Command Create()
    {
        var schedules = new Command("schedules", "Recurring jobs (cron)");
        schedules.Add(CreateSchedule());
        schedules.Add(List());
        schedules.Add(Get());
        schedules.Add(Patch("pause", "Pause a schedule", _ => new JsonObject { ["paused"] = true }));
        schedules.Add(Patch("resume", "Resume a paused schedule", _ => new JsonObject { ["paused"] = false }));
        schedules.Add(Update());
        schedules.Add(Trigger());
        schedules.Add(Simple("rm", "Delete a schedule", HttpMethod.Delete, ""));
        return schedules;
    }

    private static Argument<string> Id() => new("id") { Description = "schedule id" };

    private static JsonObject JobSpec(CliContext ctx, string path)
    {
        var file = SubmitCommand.Load(ctx, path);
        if (file.Inputs.Count > 0)
            throw new CliException($"{path}: a schedule's job cannot carry inputs (each run would need them); put the data in the image or a dataset", exitCode: ExitCodes.Usage);
        return file.Spec;
    }

    private static Command CreateSchedule()
    {
        var jobFile = new Argument<string>("jobfile") { Description = "job file (YAML or JSON) each run submits" };
        var name = new Option<string>("--name") { Description = "schedule name", Required = true };
        var cron = new Option<string>("--cron") { Description = "cron expression (Hangfire's syntax), e.g. \"0 3 * * *\"", Required = true };
        var timeZone = new Option<string?>("--time-zone") { Description = "IANA time zone of the cron expression [server default: UTC]" };
        var concurrency = new Option<string?>("--concurrency") { Description = "allow, forbid (skip while the last run goes on) or replace (cancel it)" };
        concurrency.AcceptOnlyFromAmong("allow", "forbid", "replace");
        var command = new Command("create", "Create a schedule that submits the job file on a cron") { jobFile, name, cron, timeZone, concurrency, SubmitCommand.Set };
        CliContext.SetAction(command, async (ctx, ct) =>
        {
            var body = new JsonObject { ["name"] = ctx.Get(name), ["cron"] = ctx.Get(cron), ["job"] = JobSpec(ctx, ctx.Get(jobFile)!) };
            if (ctx.Get(timeZone) is { } tz) body["timeZone"] = tz;
            if (ctx.Get(concurrency) is { } c) body["concurrency"] = c;
            var schedule = await ctx.Api.PostJsonAsync("api/v1/schedules", body, ct);
            Write(ctx, schedule);
            return ExitCodes.Success;
        });
        return command;
    }

    private static Command List()
    {
        var command = new Command("list", "List schedules");
        command.Aliases.Add("ls");
        CliContext.SetAction(command, async (ctx, ct) =>
        {
            var list = await ctx.Api.GetJsonAsync("api/v1/schedules", ct);
            if (ctx.Terminal.Json) Terminal.WriteJson(list);
            else
            {
                var items = list.ValueKind == JsonValueKind.Array ? list : list.GetProperty("items");
                Terminal.WriteTable(["ID", "NAME", "CRON", "TIME ZONE", "CONCURRENCY", "PAUSED"], items.EnumerateArray().Select(s => (IReadOnlyList<string?>)
                    [ApiKeyCommands.Text(s, "id"), ApiKeyCommands.Text(s, "name"), ApiKeyCommands.Text(s, "cron"), ApiKeyCommands.Text(s, "timeZone"),
                     ApiKeyCommands.Text(s, "concurrency"), ApiKeyCommands.Text(s, "paused")]));
            }
            return ExitCodes.Success;
        });
        return command;
    }

    private static Command Get()
    {
        var id = Id();
        var command = new Command("get", "Show a schedule") { id };
        CliContext.SetAction(command, async (ctx, ct) =>
        {
            Write(ctx, await ctx.Api.GetJsonAsync("api/v1/schedules/" + ApiClient.Escape(ctx.Get(id)!), ct), always: true);
            return ExitCodes.Success;
        });
        return command;
    }

    private static Command Update()
    {
        var id = Id();
        var cron = new Option<string?>("--cron") { Description = "new cron expression" };
        var timeZone = new Option<string?>("--time-zone") { Description = "new time zone" };
        var jobFile = new Option<string?>("--job") { Description = "new job file" };
        var command = new Command("update", "Change a schedule's cron, time zone or job") { id, cron, timeZone, jobFile, SubmitCommand.Set };
        return Patch(command, id, ctx =>
        {
            var body = new JsonObject();
            if (ctx.Get(cron) is { } c) body["cron"] = c;
            if (ctx.Get(timeZone) is { } tz) body["timeZone"] = tz;
            if (ctx.Get(jobFile) is { } f) body["job"] = JobSpec(ctx, f);
            if (body.Count == 0) throw new CliException("nothing to change: give --cron, --time-zone or --job", exitCode: ExitCodes.Usage);
            return body;
        });
    }

    private static Command Patch(string name, string description, Func<CliContext, JsonObject> body)
    {
        var id = Id();
        return Patch(new Command(name, description) { id }, id, body);
    }

    private static Command Patch(Command command, Argument<string> id, Func<CliContext, JsonObject> body)
    {
        CliContext.SetAction(command, async (ctx, ct) =>
        {
            Write(ctx, await ctx.Api.SendJsonAsync(HttpMethod.Patch, "api/v1/schedules/" + ApiClient.Escape(ctx.Get(id)!), body(ctx), ct));
            return ExitCodes.Success;
        });
        return command;
    }

    private static Command Trigger()
    {
        var id = Id();
        var command = new Command("trigger", "Start a run now (by the schedule's concurrency rule); prints the run's job id") { id };
        CliContext.SetAction(command, async (ctx, ct) =>
        {
            var job = await ctx.Api.SendJsonAsync(HttpMethod.Post, "api/v1/schedules/" + ApiClient.Escape(ctx.Get(id)!) + "/trigger", null, ct);
            if (ctx.Terminal.Json) Terminal.WriteJson(job);
            else Console.Out.WriteLine(ApiKeyCommands.Text(job, "id"));
            return ExitCodes.Success;
        });
        return command;
    }

    private static Command Simple(string name, string description, HttpMethod method, string suffix)
    {
        var id = Id();
        var command = new Command(name, description) { id };
        CliContext.SetAction(command, async (ctx, ct) =>
        {
            Write(ctx, await ctx.Api.SendJsonAsync(method, "api/v1/schedules/" + ApiClient.Escape(ctx.Get(id)!) + suffix, null, ct));
            return ExitCodes.Success;
        });
        return command;
    }

    private static void Write(CliContext ctx, JsonElement answer, bool always = false)
    {
        if (ctx.Terminal.Json || always) Terminal.WriteJson(answer);
        else ctx.Terminal.Info("done" + (answer.ValueKind == JsonValueKind.Object && ApiKeyCommands.Text(answer, "id") is { } id ? $": schedule {id}" : ""));
    }
}
