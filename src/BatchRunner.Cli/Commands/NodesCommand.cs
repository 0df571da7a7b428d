using System.CommandLine;
using System.Globalization;
using BatchRunner.Cli.Output;

namespace BatchRunner.Cli.Commands;

/// <summary><c>batchrunner nodes</c>: worker nodes, what they offer and what their jobs hold.</summary>
internal static class NodesCommand
{
    public static Command Create()
    {
        var all = new Option<bool>("--all") { Description = "also nodes that stopped heartbeating" };
        var command = new Command("nodes", "List worker nodes: capacity, allocation, running jobs") { all };
        CliContext.SetAction(command, async (ctx, ct) =>
        {
            var nodes = await ctx.Api.GetJsonAsync("api/v1/nodes" + (ctx.Get(all) ? "?all=true" : ""), ct);
            if (ctx.Terminal.Json)
            {
                Terminal.WriteJson(nodes);
                return ExitCodes.Success;
            }
            Terminal.WriteTable(["NAME", "ALIVE", "CPUS", "MEMORY", "GPUS", "JOBS", "QUEUES"], nodes.EnumerateArray().Select(n =>
            {
                var cap = n.GetProperty("capacity");
                var used = n.GetProperty("allocated");
                return (IReadOnlyList<string?>)
                [
                    n.GetProperty("name").GetString(), n.GetProperty("alive").GetBoolean() ? "yes" : "no",
                    string.Create(CultureInfo.InvariantCulture, $"{used.GetProperty("cpus").GetDouble():0.##}/{cap.GetProperty("cpus").GetDouble():0.##}"),
                    $"{Units.Bytes(used.GetProperty("memoryBytes").GetInt64())}/{Units.Bytes(cap.GetProperty("memoryBytes").GetInt64())}",
                    $"{used.GetProperty("gpus").GetInt32()}/{cap.GetProperty("gpus").GetInt32()}",
                    n.GetProperty("runningJobs").GetArrayLength().ToString(CultureInfo.InvariantCulture),
                    string.Join(",", n.GetProperty("queues").EnumerateArray().Select(q => q.GetString())),
                ];
            }));
            return ExitCodes.Success;
        });
        return command;
    }
}
