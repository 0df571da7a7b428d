using System.Diagnostics;
using System.Text.RegularExpressions;
using BatchRunner.Runtime.Logs;
using Xunit.Abstractions;

namespace BatchRunner.Runtime.Tests.Logs;

/// <summary>The relay with the real runc: what a container writes reaches its capped, ordered log, and the job never waits on it.</summary>
public sealed class LogRelayFacts(RuncFixture fx, ITestOutputHelper output) : IClassFixture<RuncFixture>
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60);

    private async Task<(BatchRunner.Core.ExitResult Exit, ContainerIo Io, bool Truncated)> RunAsync(ContainerSpec spec, long? capBytes = null)
    {
        var io = fx.Io(spec.Id);
        if (capBytes is { } cap) io = io with { Limits = new LogLimits(cap) };
        await using var c = await fx.Runtime.StartAsync(spec, fx.BundleDir(spec.Id), io, CancellationToken.None);
        var exit = await c.WaitAsync(new CancellationTokenSource(Deadline).Token);
        return (exit, io, c.LogsTruncated.IsCompleted);
    }

    private static async Task<string> CombinedAsync(ContainerIo io)
    {
        var reader = new OrderedLogReader([("stdout", io.StdoutPath), ("stderr", io.StderrPath)], timestamps: false);
        using var ms = new MemoryStream();
        await reader.PumpAsync(ms, final: true, CancellationToken.None);
        return System.Text.Encoding.UTF8.GetString(ms.ToArray());
    }

    [Fact]
    public async Task Relay_KeepsHeadMarkerAndTail_AndTheJobSucceeds_WhenItWrites300MB()
    {
        const long cap = 1 << 20;
        var sw = Stopwatch.StartNew();
        var (exit, io, truncated) = await RunAsync(fx.Spec(fx.NewId(), "sh", "-c",
            "echo BEGIN; yes 'the same line of output, again and again' | head -c 300000000; echo; echo END"), cap);
        output.WriteLine($"300 MB through the relay: {sw.Elapsed.TotalSeconds:0.00} s");

        Assert.True(exit.Successful);
        Assert.True(truncated);
        Assert.InRange(StoredLog.DiskBytes(io.StdoutPath), cap / 2, cap);
        var text = await StoredLog.ReadAllTextAsync(io.StdoutPath, "stdout");
        Assert.InRange(text.Length, cap / 2, cap);
        Assert.StartsWith("BEGIN\nthe same line of output, again and again\n", text);
        Assert.EndsWith("\nEND\n", text); // after the line head -c cut
        var marker = Assert.Single(Regex.Matches(text, @"\[batchrunner: (\d+) bytes of stdout dropped here[^\]]*\]\n"));
        Assert.InRange(long.Parse(marker.Groups[1].Value), 300_000_000 - cap, 300_000_000);
        Assert.Equal(300_000_000 + "BEGIN\n\nEND\n".Length, StoredLog.End(io.StdoutPath));
    }

    [Fact]
    public async Task Relay_OrdersTheStreamsAsWritten_WhenWritesAreApart()
    {
        var (exit, io, _) = await RunAsync(fx.Spec(fx.NewId(), "sh", "-c",
            "echo a; sleep 0.05; echo b >&2; sleep 0.05; echo c; sleep 0.05; printf 'no newline' >&2"));

        Assert.True(exit.Successful);
        Assert.Equal("a\nb\nc\nno newline", await CombinedAsync(io));
        Assert.Equal("a\nc\n", await StoredLog.ReadAllTextAsync(io.StdoutPath, "stdout"));
        Assert.Equal("b\nno newline", await StoredLog.ReadAllTextAsync(io.StderrPath, "stderr"));
    }
}
