using BatchRunner.Server.Nodes;
using Npgsql;

namespace BatchRunner.Server.Storage;

/// <summary>
/// Whether the node of a job is alive now, judged like every liveness question by the node's lease on the
/// database's clock (<see cref="NodeStore.AliveCondition"/>), so the API can say a job's node has died
/// before the reaper on another worker has handed the job back (or when no worker is left to do it).
/// </summary>
/// <remarks>
/// For a <c>starting</c> or <c>running</c> job the question is about the very process running its
/// attempt (node name and instance): a node restarted under the same name has not taken that attempt over.
/// For any other state it is about the node named in <c>node</c>, which keeps the job's logs and outputs
/// and serves them whichever of its processes is running.
/// </remarks>
public sealed class JobNodeLiveness(NpgsqlDataSource db)
{
    /// <summary>Rows (job id, its node is alive) for the jobs of <c>@ids</c> that have a node.</summary>
    internal const string Sql = $"{Select} where j.id = any(@ids) and j.node is not null";

    /// <summary>As <see cref="Sql"/> for the one job <c>@id</c> (a job's document). A scalar, not a one-element array: for
    /// <c>= any($1)</c> PostgreSQL's generic plan assumes ten elements, so it planned the statement again at every
    /// execution (0.3 ms each, two per trivial job's GETs); for <c>= $1</c> it keeps the generic plan.</summary>
    internal const string OneSql = $"{Select} where j.id = @id and j.node is not null";

    private const string Select = $"""
        select j.id, exists (select 1 from batchrunner.nodes n
                              where n.name = j.node
                                and (j.state not in ('starting', 'running') or n.instance_id is not distinct from j.node_instance)
                                and {NodeStore.AliveCondition})
          from batchrunner.jobs j
        """;

    /// <summary>Job id → its node is alive, for the jobs of <paramref name="jobIds"/> that have a node; jobs without one are absent.</summary>
    public async Task<IReadOnlyDictionary<Guid, bool>> GetAsync(IReadOnlyCollection<Guid> jobIds, CancellationToken ct)
    {
        if (jobIds.Count == 0) return new Dictionary<Guid, bool>();
        await using var cmd = db.CreateCommand(Sql);
        cmd.Parameters.AddWithValue("ids", jobIds.ToArray());
        var result = new Dictionary<Guid, bool>(jobIds.Count);
        await using var rd = await cmd.ExecuteReaderAsync(ct);
        while (await rd.ReadAsync(ct)) result[rd.GetGuid(0)] = rd.GetBoolean(1);
        return result;
    }
}
