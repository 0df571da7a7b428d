using System.Reflection;
using Microsoft.Extensions.Logging;
using Npgsql;

namespace BatchRunner.Server.Storage;

/// <summary>
/// Applies the versioned SQL scripts embedded as Storage/Migrations/NNNN_name.sql, in order, each in its
/// own transaction, recording them in batchrunner.schema_migrations. An advisory lock makes concurrent
/// starts (API and workers sharing one database) apply each script exactly once.
/// </summary>
public static partial class Migrator
{
    private const long LockKey = 0x42_52_4D_49_47; // "BRMIG"

    public static IReadOnlyList<(int Version, string Name, string Sql)> Scripts()
    {
        var asm = typeof(Migrator).Assembly;
        return asm.GetManifestResourceNames()
            .Where(n => n.Contains(".Storage.Migrations.") && n.EndsWith(".sql"))
            .Select(n =>
            {
                var file = n[(n.IndexOf(".Storage.Migrations.", StringComparison.Ordinal) + ".Storage.Migrations.".Length)..^4];
                var us = file.IndexOf('_');
                var version = int.Parse(file[..us].TrimStart('_'));
                using var s = asm.GetManifestResourceStream(n)!;
                using var r = new StreamReader(s);
                return (version, file[(us + 1)..], r.ReadToEnd());
            })
            .OrderBy(m => m.version)
            .ToList();
    }

    public static async Task<int> MigrateAsync(NpgsqlDataSource db, ILogger log, CancellationToken ct)
    {
        await using var conn = await db.OpenConnectionAsync(ct);
        await Exec(conn, null, "select pg_advisory_lock(@k)", ct, ("k", LockKey));
        try
        {
            await Exec(conn, null, """
                create schema if not exists batchrunner;
                create table if not exists batchrunner.schema_migrations (
                    version integer primary key, name text not null, applied_at timestamptz not null default now());
                """, ct);
            var applied = new HashSet<int>();
            await using (var cmd = new NpgsqlCommand("select version from batchrunner.schema_migrations", conn))
            await using (var rd = await cmd.ExecuteReaderAsync(ct))
                while (await rd.ReadAsync(ct)) applied.Add(rd.GetInt32(0));

            int count = 0;
            foreach (var (version, name, sql) in Scripts())
            {
                if (applied.Contains(version)) continue;
                await using var tx = await conn.BeginTransactionAsync(ct);
                await Exec(conn, tx, sql, ct);
                await Exec(conn, tx, "insert into batchrunner.schema_migrations(version, name) values (@v, @n)", ct, ("v", version), ("n", name));
                await tx.CommitAsync(ct);
                LogApplied(log, version, name);
                count++;
            }
            return count;
        }
        finally
        {
            await Exec(conn, null, "select pg_advisory_unlock(@k)", CancellationToken.None, ("k", LockKey));
        }
    }

    private static async Task Exec(NpgsqlConnection conn, NpgsqlTransaction? tx, string sql, CancellationToken ct, params (string, object)[] ps)
    {
        await using var cmd = new NpgsqlCommand(sql, conn, tx);
        foreach (var (n, v) in ps) cmd.Parameters.AddWithValue(n, v);
        await cmd.ExecuteNonQueryAsync(ct);
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Applied database migration {Version} ({Name})")]
    private static partial void LogApplied(ILogger log, int version, string name);
}
