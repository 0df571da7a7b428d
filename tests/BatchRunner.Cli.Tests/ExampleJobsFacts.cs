using System.IO.Compression;
using System.Text.Json;

namespace BatchRunner.Cli.Tests;

/// <summary>
/// The examples in jobs/ as a new user without Docker Hub runs them: images built and imported by
/// scripts/example-images.sh, then <c>batchrunner submit jobs/NAME/job.yaml --set image=examples/... --follow --output-dir</c>.
/// Each prints exactly its expected-output.txt and leaves the outputs its README promises.
/// </summary>
[Collection(CliCollection.Name)]
public sealed class ExampleJobsFacts(CliFixture f) : IDisposable
{
    private readonly string _out = Directory.CreateTempSubdirectory("br-cli-examples-out-").FullName;

    public void Dispose() => Directory.Delete(_out, recursive: true);

    private async Task<CliResult> SubmitExampleAsync(string name, string image)
    {
        await f.ExampleImagesAsync();
        var r = await CliProcess.RunAsync(
            ["submit", Path.Combine("jobs", name, "job.yaml"), "--set", $"image={image}", "--follow", "--output-dir", _out],
            f.Env(), timeout: TimeSpan.FromMinutes(3));
        Assert.True(r.ExitCode == 0, r.ToString());
        var expected = await File.ReadAllTextAsync(Path.Combine(CliProcess.RepositoryRoot, "jobs", name, "expected-output.txt"));
        Assert.Equal(expected, r.Stdout);
        return r;
    }

    [Fact]
    public async Task Hello_PrintsItsExpectedOutputAndWritesTheAnswer()
    {
        await SubmitExampleAsync("hello", "examples/busybox:1");
        Assert.Equal("42\n", await File.ReadAllTextAsync(Path.Combine(_out, "answer.txt")));
    }

    [Fact]
    public async Task CsvSummary_WritesStatisticsAndAPng_FromTheCsvInItsInputs()
    {
        await SubmitExampleAsync("csv-summary", "examples/python-numpy:1");
        var summary = JsonDocument.Parse(await File.ReadAllTextAsync(Path.Combine(_out, "summary.json"))).RootElement;
        Assert.Equal(400, summary.GetProperty("rows").GetInt32());
        Assert.Equal(400, summary.GetProperty("columns").GetProperty("temperature_c").GetProperty("count").GetInt32());
        Assert.Equal(4, summary.GetProperty("groupMeans").GetProperty("wind_mps").EnumerateObject().Count());
        var png = await File.ReadAllBytesAsync(Path.Combine(_out, "histograms.png"));
        Assert.Equal([0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A], png[..8]);
        Assert.Equal("IHDR", System.Text.Encoding.ASCII.GetString(png, 12, 4));
        Assert.Equal(640, System.Buffers.Binary.BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(16)));
        Assert.Equal(480, System.Buffers.Binary.BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(20)));
        Assert.Equal("column,count,mean,std,min,25%,median,75%,max", (await File.ReadAllLinesAsync(Path.Combine(_out, "summary.csv")))[0]);
    }

    [Fact]
    public async Task TrainLogreg_LogsEveryEpochAndWritesTheModelAndMetrics()
    {
        var r = await SubmitExampleAsync("train-logreg", "examples/python-numpy:1");
        Assert.Equal(20, r.Stdout.Split('\n').Count(l => l.StartsWith("epoch ", StringComparison.Ordinal)));
        var metrics = JsonDocument.Parse(await File.ReadAllTextAsync(Path.Combine(_out, "metrics.json"))).RootElement;
        Assert.Equal(20, metrics.GetProperty("epochs").GetInt32());
        Assert.InRange(metrics.GetProperty("test_accuracy").GetDouble(), 0.8, 1.0);
        Assert.InRange(metrics.GetProperty("final_loss").GetDouble(), 0.0, 0.5);
        using var model = ZipFile.OpenRead(Path.Combine(_out, "model.npz")); // np.savez writes a zip of .npy arrays
        Assert.Equal(["bias.npy", "weights.npy"], model.Entries.Select(e => e.FullName).Order());
    }

    [Fact]
    public async Task Sweep_RunsAsAnArray_AndDownloadsEachChildsMetrics()
    {
        await f.ExampleImagesAsync();
        var r = await CliProcess.RunAsync(
            ["submit", Path.Combine("jobs", "sweep", "job.yaml"), "--set", "image=examples/python-numpy:1", "--wait", "--output-dir", _out],
            f.Env(), timeout: TimeSpan.FromMinutes(4));

        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains("array: 6 of 6 ended (6 succeeded, 0 failed, 0 cancelled)", r.Stderr);
        // Child i trained on the i-th point of the 3 x 2 grid (learning rate x L2) and wrote its own metrics.
        var grid = new[] { 0.1, 0.5, 2.0 }.SelectMany(rate => new[] { 0.0, 0.01 }.Select(l2 => (rate, l2))).ToArray();
        for (var i = 0; i < 6; i++)
        {
            var metrics = JsonDocument.Parse(await File.ReadAllTextAsync(Path.Combine(_out, i.ToString(), "metrics.json"))).RootElement;
            Assert.Equal(grid[i].rate, metrics.GetProperty("learning_rate").GetDouble());
            Assert.Equal(grid[i].l2, metrics.GetProperty("l2").GetDouble());
            Assert.True(File.Exists(Path.Combine(_out, i.ToString(), "model.npz")));
        }
    }

    [Fact]
    public async Task ImageList_ShowsTheImportedExampleImages()
    {
        await f.ExampleImagesAsync();
        var list = JsonDocument.Parse((await f.RunAsync("images", "list", "-o", "json")).Stdout).RootElement;
        var names = list.EnumerateArray().Select(i => i.GetProperty("name").GetString()).ToList();
        Assert.Contains("docker.io/examples/busybox:1", names);
        Assert.Contains("docker.io/examples/python-numpy:1", names);
    }
}
