using BatchRunner.Bench;
using BatchRunner.Runtime;

// dotnet run -c Release --project bench/BatchRunner.Bench -- pull [--rounds N]
// dotnet run -c Release --project bench/BatchRunner.Bench -- start [--rounds N] [--runtime /usr/sbin/runc]
// dotnet run -c Release --project bench/BatchRunner.Bench -- load [--jobs N] [--clients N] [--seconds N] [--rate N]
// dotnet run -c Release --project bench/BatchRunner.Bench -- logcost [--jobs N] [--rounds N]
// dotnet run -c Release --project bench/BatchRunner.Bench -- array [--size N] [--parallelism N] [--rounds N] [--singles N]
// dotnet run -c Release --project bench/BatchRunner.Bench -- list [--jobs N] [--requests N] [--clients N]
// dotnet run -c Release --project bench/BatchRunner.Bench -- retention [--jobs N]
// dotnet run -c Release --project bench/BatchRunner.Bench -- logrelay [--rounds N] [--runtime /usr/sbin/runc]
// dotnet run -c Release --project bench/BatchRunner.Bench -- disk [--rounds N]
// dotnet run -c Release --project bench/BatchRunner.Bench -- idle [--seconds N] [--windows N] [-- SERVER-ARGS...]
// dotnet run -c Release --project bench/BatchRunner.Bench -- summary [--parts start,pull,api,idle] [--start-rounds N] [--start-jobs N] [--runtime PATH] [--start-warmup N] [--start-cpus X] [--statements] [--keep-server-log] [--pull-rounds N]
//                                                                    [--api-jobs N] [--api-seconds N] [--api-rate N] [--idle-seconds N] [--idle-windows N]
var command = args.FirstOrDefault();
var rounds = args.SkipWhile(a => a != "--rounds").Skip(1).Select(int.Parse).FirstOrDefault(5);
int Arg(string name, int fallback) => args.SkipWhile(a => a != name).Skip(1).Select(int.Parse).FirstOrDefault(fallback);
switch (command)
{
    case "pull":
        return await PullBench.RunAsync(rounds);
    case "start":
        return await StartBench.RunAsync(args.Contains("--rounds") ? rounds : 40,
            args.SkipWhile(a => a != "--runtime").Skip(1).FirstOrDefault() ?? RuntimeDetector.FindOnPath("runc") ?? "/usr/sbin/runc");
    case "load":
        return await LoadBench.RunAsync(Arg("--jobs", 10_000), Arg("--clients", 8), Arg("--seconds", 20), Arg("--rate", 100));
    case "logcost":
        return await LogCostBench.RunAsync(args.SkipWhile(a => a != "--jobs").Skip(1).Select(int.Parse).FirstOrDefault(30),
            args.Contains("--rounds") ? rounds : 2);
    case "array":
        return await ArrayBench.RunAsync(Arg("--size", 10_000), Arg("--parallelism", 100), args.Contains("--rounds") ? rounds : 3, Arg("--singles", 200));
    case "list":
        return await ListBench.RunAsync(Arg("--jobs", 100_000), Arg("--requests", 300), Arg("--clients", 4));
    case "retention":
        return await RetentionBench.RunAsync(Arg("--jobs", 100_000));
    case "logrelay":
        return await LogRelayBench.RunAsync(args.Contains("--rounds") ? rounds : 5,
            args.SkipWhile(a => a != "--runtime").Skip(1).FirstOrDefault() ?? RuntimeDetector.FindOnPath("runc") ?? "/usr/sbin/runc");
    case "disk":
        return await DiskBench.RunAsync(rounds);
    case "idle":
        return await IdleBench.RunAsync(Arg("--seconds", 20), Arg("--windows", 3), args.SkipWhile(a => a != "--").Skip(1).ToArray());
    case "hangfire-bare":
        return await HangfireBare.RunAsync(args[1]);
    case "summary":
    {
        // Issue 14's figures in one table; each part measures side by side with its baseline and adds its rows.
        // --parts start,pull,api,idle: only those parts (all four by default), e.g. to measure one fix.
        var parts = (args.SkipWhile(a => a != "--parts").Skip(1).FirstOrDefault() ?? "start,pull,api,idle").Split(',');
        var table = new SummaryTable();
        if (parts.Contains("start"))
            await StartSummary.AddRowsAsync(table, new StartSummaryOptions(Arg("--start-rounds", 20), Arg("--start-jobs", 500),
            args.SkipWhile(a => a != "--runtime").Skip(1).FirstOrDefault() ?? RuntimeDetector.FindOnPath("runc") ?? "/usr/sbin/runc",
            Statements: args.Contains("--statements"), KeepServerLog: args.Contains("--keep-server-log"), WarmupJobs: Arg("--start-warmup", 200),
            Cpus: double.Parse(args.SkipWhile(a => a != "--start-cpus").Skip(1).FirstOrDefault() ?? "0.1", System.Globalization.CultureInfo.InvariantCulture)));
        if (parts.Contains("pull")) await PullSummary.AddRowsAsync(table, Arg("--pull-rounds", 3));
        if (parts.Contains("api")) await ApiSummary.AddRowsAsync(table, Arg("--api-jobs", 10_000), Arg("--api-seconds", 10), Arg("--api-rate", 100));
        if (parts.Contains("idle")) await IdleSummary.AddRowsAsync(table, Arg("--idle-seconds", 20), Arg("--idle-windows", 3));
        table.Print(Console.Out);
        return table.Rows.Any(r => r.BatchRunner.StartsWith("FAILED", StringComparison.Ordinal)) ? 1 : 0;
    }
    default:
        Console.Error.WriteLine("usage: BatchRunner.Bench pull [--rounds N] | start [--rounds N] [--runtime PATH] | load [--jobs N] [--clients N] [--seconds N] [--rate N] | logcost [--jobs N] [--rounds N] | array [--size N] [--parallelism N] [--rounds N] [--singles N] | list [--jobs N] [--requests N] [--clients N] | retention [--jobs N] | logrelay [--rounds N] [--runtime PATH] | disk [--rounds N] | idle [--seconds N] [--windows N] [-- SERVER-ARGS] | summary [--parts start,pull,api,idle] [--start-rounds N] [--start-jobs N] [--runtime PATH] [--start-warmup N] [--start-cpus X] [--statements] [--keep-server-log] [--pull-rounds N] [--api-jobs N] [--api-seconds N] [--api-rate N] [--idle-seconds N] [--idle-windows N]");
        return 2;
}
