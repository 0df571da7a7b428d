using System.CommandLine;
using BatchRunner.Cli.Jobs;

namespace BatchRunner.Cli.Commands;

/// <summary><c>batchrunner submit JOBFILE [--set path=value...] [--wait|--follow]</c>.</summary>
internal static class SubmitCommand
{
    private static readonly Argument<string> File = new("jobfile") { Description = "job file (YAML or JSON, the API's shape; \"inputs:\" paths are relative to it)" };
    internal static readonly Option<string[]> Set = new("--set") { Description = "override a field: resources.memory=2Gi, env.SEED=7, command=[\"sh\",\"-c\",\"...\"]; repeatable" };
    private static readonly Option<string[]> Input = new("--input", "-i") { Description = "another file or directory for /inputs; repeatable" };
    private static readonly Option<bool> Wait = new("--wait") { Description = "wait for the job to end and exit with its exit code" };
    private static readonly Option<bool> Follow = new("--follow", "-f") { Description = "as --wait, streaming its logs" };
    private static readonly Option<string?> OutputDir = new("--output-dir") { Description = "with --wait or --follow: download /outputs here when it ends" };

    public static Command Create()
    {
        var command = new Command("submit", "Submit a job file; prints the job id (Ctrl-C while waiting stops the waiting, not the job)")
        {
            File, Set, Input, Wait, Follow, OutputDir,
        };
        command.Validators.Add(r =>
        {
            if (r.GetValue(Wait) && r.GetValue(Follow)) r.AddError("--wait and --follow exclude each other (--follow also waits)");
            if (r.GetValue(OutputDir) is not null && !r.GetValue(Wait) && !r.GetValue(Follow)) r.AddError("--output-dir needs --wait or --follow");
        });
        CliContext.SetAction(command, SubmitAsync);
        return command;
    }

    /// <summary>The job file with its overrides applied: the spec to send and the inputs to attach.</summary>
    internal static JobFile Load(CliContext ctx, string path)
    {
        var file = JobFile.Load(path);
        SpecOverrides.Apply(file.Spec, ctx.Get(Set) ?? []);
        return file;
    }

    private static async Task<int> SubmitAsync(CliContext ctx, CancellationToken ct)
    {
        var file = Load(ctx, ctx.Get(File)!);
        var inputs = file.Inputs.Concat((ctx.Get(Input) ?? []).Select(Path.GetFullPath)).ToList();
        var job = await JobSession.SubmitAsync(ctx, file.Spec, inputs, ct);
        var watch = ctx.Get(Follow) ? Watch.Follow : ctx.Get(Wait) ? Watch.Wait : Watch.Detach;
        return await JobSession.WatchAsync(ctx, job, watch, cancelOnInterrupt: false, ctx.Get(OutputDir), ct);
    }
}
