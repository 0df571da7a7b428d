namespace BatchRunner.Server.Nodes;

/// <summary>This worker's standing in the cluster, as the executor needs it (<see cref="NodeRegistry"/>; a fake in tests).</summary>
public interface INodeFence
{
    /// <summary>This process's node instance: attempts it begins carry it, and others take them over only once it is dead.</summary>
    Guid Instance { get; }

    /// <summary>Cancelled while this node cannot prove it is alive; running attempts must stop and record nothing.</summary>
    CancellationToken Fenced { get; }
}
