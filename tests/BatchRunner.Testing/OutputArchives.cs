using System.Formats.Tar;
using System.IO.Compression;
using System.Security.Cryptography;
using System.Text.Json;

namespace BatchRunner.Testing;

/// <summary>Reads the outputs.zip and outputs.tar.gz downloads with .NET's own readers (not the writer's library):
/// path → sha256 of every entry, to compare with the job's outputs list.</summary>
public static class OutputArchives
{
    public static Dictionary<string, string> ZipEntries(byte[] zip)
    {
        using var archive = new ZipArchive(new MemoryStream(zip), ZipArchiveMode.Read);
        var entries = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var e in archive.Entries)
        {
            using var s = e.Open();
            entries.Add(e.FullName, Convert.ToHexStringLower(SHA256.HashData(s)));
        }
        return entries;
    }

    public static Dictionary<string, string> TarGzEntries(byte[] tarGz)
    {
        using var gz = new GZipStream(new MemoryStream(tarGz), CompressionMode.Decompress);
        using var tar = new TarReader(gz);
        var entries = new Dictionary<string, string>(StringComparer.Ordinal);
        while (tar.GetNextEntry() is { } e)
        {
            if (e.EntryType is TarEntryType.Directory) continue;
            entries.Add(e.Name, e.DataStream is null ? Convert.ToHexStringLower(SHA256.HashData([])) : Convert.ToHexStringLower(SHA256.HashData(e.DataStream)));
        }
        return entries;
    }

    /// <summary>The job's outputs list (GET /api/v1/jobs/{id}/outputs) as path → sha256.</summary>
    public static Dictionary<string, string> Listed(JsonElement outputs) =>
        outputs.EnumerateArray().ToDictionary(o => o.GetProperty("path").GetString()!, o => o.GetProperty("sha256").GetString()!, StringComparer.Ordinal);
}
