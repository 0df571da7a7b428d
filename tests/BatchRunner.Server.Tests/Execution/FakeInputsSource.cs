using BatchRunner.Server.Nodes;
using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Tests.Execution;

/// <summary>Serves the tars a test put in <see cref="Tars"/> (by digest), or fails as an unreachable holder would.</summary>
internal sealed class FakeInputsSource : IInputsSource
{
    public Dictionary<string, byte[]> Tars { get; } = [];
    public int Opens { get; private set; }

    public Task<(Stream Tar, string From)> OpenAsync(Guid jobId, InputsTar inputs, CancellationToken ct)
    {
        Opens++;
        return Tars.TryGetValue(inputs.Digest, out var tar)
            ? Task.FromResult<(Stream, string)>((new MemoryStream(tar), "the fake holder"))
            : throw new InputsUnavailableException($"the inputs of job {jobId} are on node {inputs.Node}, which is down (fake)");
    }
}
