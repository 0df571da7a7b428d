using BatchRunner.Bench;

// dotnet run -c Release --project bench/BatchRunner.Bench -- pull [--rounds N]
var command = args.FirstOrDefault();
var rounds = args.SkipWhile(a => a != "--rounds").Skip(1).Select(int.Parse).FirstOrDefault(5);
switch (command)
{
    case "pull":
        return await PullBench.RunAsync(rounds);
    default:
        Console.Error.WriteLine("usage: BatchRunner.Bench pull [--rounds N]");
        return 2;
}
