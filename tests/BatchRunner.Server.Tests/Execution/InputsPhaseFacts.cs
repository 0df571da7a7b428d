using BatchRunner.Core;
using BatchRunner.Server.Execution;
using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Tests.Execution;

/// <summary>
/// The inputs phase on fakes (<see cref="ExecutorHarness"/>, <see cref="FakeInputsSource"/>): a job's inputs come from
/// the tar its record names, checked against its digest, before anything else of the attempt; a job never starts
/// without them. The cluster test runs the same across two real nodes.
/// </summary>
public sealed class InputsPhaseFacts : IDisposable
{
    private readonly ExecutorHarness _h = new();

    public void Dispose() => _h.Dispose();

    /// <summary>A real tar of a directory holding in.txt and sub/n.txt, made the way the API node makes it.</summary>
    private async Task<InputsTar> TarAsync(string text)
    {
        var dir = Directory.CreateDirectory(Path.Combine(_h.Root, "staged-" + Guid.NewGuid().ToString("N")[..6])).FullName;
        File.WriteAllText(Path.Combine(dir, "in.txt"), text);
        Directory.CreateDirectory(Path.Combine(dir, "sub"));
        File.WriteAllText(Path.Combine(dir, "sub", "n.txt"), "nested\n");
        var store = new InputsStore(new DataPaths(Path.Combine(_h.Root, "holder")));
        using var packed = await store.PackAsync(dir, CancellationToken.None);
        _h.Inputs.Tars[packed.Digest] = await File.ReadAllBytesAsync(store.PathOf(packed.Digest)!);
        return new InputsTar(packed.Digest, packed.Bytes, "api-node", "http://api-node.invalid:8080");
    }

    private Guid AddJobWith(InputsTar inputs, RetrySubmission? retry = null)
    {
        var id = _h.AddJob(ExecutorHarness.Job(retry: retry));
        _h.Store.Add(_h.Store.Job(id) with { InputsTar = inputs });
        return id;
    }

    [Fact]
    public async Task ExecuteAsync_MountsTheInputs_WhenTheTarMatchesItsDigest()
    {
        var id = AddJobWith(await TarAsync("hello\n"));
        string? seen = null;
        _h.Runtime.OnStart = c =>
        {
            var mount = Assert.Single(c.Spec.Mounts, m => m.Destination == "/inputs");
            seen = File.ReadAllText(Path.Combine(mount.Source, "in.txt")) + File.ReadAllText(Path.Combine(mount.Source, "sub", "n.txt"));
            c.Exit(0);
        };

        await _h.ExecuteAsync(id);

        Assert.Equal("hello\nnested\n", seen);
        Assert.Equal(["Begin 1", "Running 1", "Finish 1 succeeded"], _h.Store.Writes);
        Assert.Empty(Directory.GetFileSystemEntries(_h.Paths.InputsStaging));
        _h.AssertNothingHeld();
    }

    [Fact]
    public async Task ExecuteAsync_RetriesAndNeverStartsTheContainer_WhenTheHolderIsDown()
    {
        var inputs = await TarAsync("x");
        _h.Inputs.Tars.Clear();
        var id = AddJobWith(inputs);

        var e = await Assert.ThrowsAsync<JobRescheduleException>(() => _h.ExecuteAsync(id));

        Assert.Equal(TimeSpan.FromSeconds(5), e.Delay);
        Assert.Equal(["Begin 1", "Retry 1 failed inputs_unavailable 00:00:05"], _h.Store.Writes);
        Assert.Contains("on node api-node, which is down", Assert.Single(_h.Store.Outcomes).Message);
        Assert.Empty(_h.Runtime.Started);
        Assert.False(Directory.Exists(_h.Paths.Inputs(id)));
        _h.AssertNothingHeld();
    }

    [Fact]
    public async Task ExecuteAsync_FailsInputsUnavailable_WhenTheTarDoesNotMatchItsDigest_AfterTheRetries()
    {
        var inputs = await TarAsync("the real inputs\n");
        var other = await TarAsync("other bytes\n");
        _h.Inputs.Tars[inputs.Digest] = _h.Inputs.Tars[other.Digest];
        // Infrastructure failures are retried three times by default: the fourth attempt is the last.
        var id = AddJobWith(inputs);
        for (var attempt = 1; attempt <= RetryPolicy.DefaultInfrastructureRetries; attempt++)
            await Assert.ThrowsAsync<JobRescheduleException>(() => _h.ExecuteAsync(id));

        await Assert.ThrowsAsync<JobFailedException>(() => _h.ExecuteAsync(id));

        var last = _h.Store.Outcomes.Last();
        Assert.Equal(FailureReason.InputsUnavailable, last.Reason);
        Assert.Contains($"hash to {other.Digest}, not {inputs.Digest}", last.Message);
        Assert.Equal("failed", _h.Store.Job(id).State);
        Assert.Empty(_h.Runtime.Started);
        Assert.False(Directory.Exists(_h.Paths.Inputs(id)));
        Assert.Empty(Directory.GetFileSystemEntries(_h.Paths.InputsStaging));
        _h.AssertNothingHeld();
    }
}
