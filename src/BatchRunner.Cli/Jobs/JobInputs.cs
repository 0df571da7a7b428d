using System.Formats.Tar;
using System.IO.Compression;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;

namespace BatchRunner.Cli.Jobs;

/// <summary>
/// Files and directories sent with a job, which land read-only under <c>/inputs</c>: a file as <c>/inputs/NAME</c>, a
/// directory as <c>/inputs/DIRNAME/...</c>. A file goes as a multipart file part; a directory as an <c>archive</c> part, a
/// tar.gz written while it is uploaded (nothing is built in memory or on disk first). Two inputs with one name are refused
/// here, before anything is sent.
/// </summary>
internal static class JobInputs
{
    public static void Check(IReadOnlyList<string> inputs)
    {
        var names = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var input in inputs)
        {
            if (!File.Exists(input) && !Directory.Exists(input))
                throw new CliException($"input {input} does not exist", exitCode: ExitCodes.Usage);
            var name = NameOf(input);
            if (names.TryGetValue(name, out var other))
                throw new CliException($"inputs {other} and {input} would both be /inputs/{name}; rename one", exitCode: ExitCodes.Usage);
            names[name] = input;
        }
    }

    /// <summary>The job spec alone as JSON, or with inputs as <c>multipart/form-data</c> (spec part first).</summary>
    public static HttpContent Content(JsonObject spec, IReadOnlyList<string> inputs)
    {
        var json = new StringContent(spec.ToJsonString(), Encoding.UTF8, "application/json");
        if (inputs.Count == 0) return json;
        Check(inputs);
        var form = new MultipartFormDataContent();
        form.Add(json, "spec");
        foreach (var input in inputs)
        {
            if (Directory.Exists(input))
                form.Add(new DirectoryArchiveContent(input), "archive", NameOf(input) + ".tar.gz");
            else
            {
                var file = new StreamContent(File.OpenRead(input));
                file.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
                form.Add(file, "file", NameOf(input));
            }
        }
        return form;
    }

    private static string NameOf(string path) => Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(path)));

    /// <summary>A directory as tar.gz with the directory's own name as the top entry, produced as the request body is sent.</summary>
    private sealed class DirectoryArchiveContent : HttpContent
    {
        private readonly string _dir;

        public DirectoryArchiveContent(string dir)
        {
            _dir = Path.TrimEndingDirectorySeparator(Path.GetFullPath(dir));
            Headers.ContentType = new MediaTypeHeaderValue("application/gzip");
        }

        protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context, CancellationToken ct)
        {
            await using var gz = new GZipStream(stream, CompressionLevel.Fastest, leaveOpen: true);
            await TarFile.CreateFromDirectoryAsync(_dir, gz, includeBaseDirectory: true, ct);
        }

        protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context) =>
            SerializeToStreamAsync(stream, context, CancellationToken.None);

        protected override bool TryComputeLength(out long length)
        {
            length = 0;
            return false; // sent chunked
        }
    }
}
