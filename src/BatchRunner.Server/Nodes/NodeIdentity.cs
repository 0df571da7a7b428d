namespace BatchRunner.Server.Nodes;

/// <summary>This worker's identity in the cluster.</summary>
/// <param name="ContainerPrefix">
/// Starts every container id (and so cgroup name) this worker creates. It is unique per node name and
/// data directory, so orphan clean-up after a crash removes this worker's leftovers and never touches
/// the containers of another worker process on the same machine.
/// </param>
public sealed record NodeIdentity(string Name, string ContainerPrefix)
{
    public static NodeIdentity For(string name, string dataDir)
    {
        var hash = System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(name + "\0" + Path.GetFullPath(dataDir)));
        return new NodeIdentity(name, $"br-{Convert.ToHexStringLower(hash)[..8]}-");
    }

    public string ContainerId(Guid jobId, int attempt) => $"{ContainerPrefix}{jobId:N}-{attempt}";
}
