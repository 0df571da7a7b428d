using System.Text.Json;
using BatchRunner.Core;
using Microsoft.AspNetCore.Http.HttpResults;

namespace BatchRunner.Server.Api;

/// <summary>What <see cref="JsonBody.ReadAsync{T}"/> made of a body: the value, or the problem to answer (400 naming
/// the field, or 413 past the size limit).</summary>
public sealed record JsonRead<T>(T? Value, ValidationProblem? Invalid = null, ProblemHttpResult? TooLarge = null) where T : class;

/// <summary>What <see cref="JsonBody.ReadDocumentAsync"/> made of a body: the parsed document (the caller disposes
/// it), or the problem to answer (400: not JSON; 413: past the size limit).</summary>
public sealed record JsonDocumentRead(JsonDocument? Document, ValidationProblem? Invalid = null, ProblemHttpResult? TooLarge = null);

/// <summary>
/// Reads a JSON request body (or a multipart part) of a bounded size: a body past the limit is refused with 413 once
/// that many bytes have been read, whatever its Content-Length said, so that no request makes the server buffer more.
/// What is read is judged against the expected shape by <see cref="SubmissionShape"/>: unknown fields are errors (a
/// typo is not a silently ignored setting), every bad field is named at once, in the API's words.
/// </summary>
public static class JsonBody
{
    /// <summary>The most a JSON document the API reads may take: a job spec, with its command, arguments and
    /// environment bounded at 256 KiB (JobSpecValidator.MaxCommandBytes), fits several times over.</summary>
    public const int MaxBytes = 1024 * 1024;

    /// <param name="field">What an error about the whole document is reported under ("body", "spec").</param>
    /// <param name="declaredLength">The body's Content-Length, when known: past the limit, refused without reading.</param>
    public static async Task<JsonDocumentRead> ReadDocumentAsync(Stream body, string field, long? declaredLength, CancellationToken ct)
    {
        if (declaredLength > MaxBytes) return new JsonDocumentRead(null, TooLarge: TooLargeProblem(field));
        try
        {
            await using var limited = new LimitedStream(body, MaxBytes);
            return new JsonDocumentRead(await JsonDocument.ParseAsync(limited, cancellationToken: ct));
        }
        catch (LimitedStream.TooLongException)
        {
            return new JsonDocumentRead(null, TooLarge: TooLargeProblem(field));
        }
        catch (JsonException e)
        {
            return new JsonDocumentRead(null, Invalid: TypedResults.ValidationProblem(
                new Dictionary<string, string[]> { [field] = [SubmissionShape.NotJson(e)] }, title: "The request is not valid JSON"));
        }
    }

    /// <summary>The body as a <typeparamref name="T"/>; any field that does not fit makes the whole body a 400 naming each.</summary>
    /// <param name="what">What the document is ("an API key request: name, tenant and role").</param>
    public static async Task<JsonRead<T>> ReadAsync<T>(Stream body, string field, string what, long? declaredLength, CancellationToken ct) where T : class
    {
        var read = await ReadDocumentAsync(body, field, declaredLength, ct);
        if (read.Document is null) return new JsonRead<T>(null, read.Invalid, read.TooLarge);
        using var doc = read.Document;
        var (value, errors) = SubmissionShape.Read<T>(doc.RootElement, field, what);
        return errors.Count == 0 ? new JsonRead<T>(value)
            : new JsonRead<T>(null, Invalid: TypedResults.ValidationProblem(errors, title: "The request is not JSON of the expected shape"));
    }

    private static ProblemHttpResult TooLargeProblem(string field) =>
        TypedResults.Problem(statusCode: StatusCodes.Status413PayloadTooLarge, title: "Request too large",
            detail: $"the JSON {field} is larger than {MaxBytes} bytes (1 MiB); send input files as multipart parts instead");

    /// <summary>Reads at most a given number of bytes of a stream, then throws: the limit holds for chunked bodies too.</summary>
    private sealed class LimitedStream(Stream inner, long limit) : Stream
    {
        public sealed class TooLongException() : IOException("body too long");

        private long _read;

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken ct = default)
        {
            var n = await inner.ReadAsync(buffer, ct);
            if ((_read += n) > limit) throw new TooLongException();
            return n;
        }

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken ct) =>
            ReadAsync(buffer.AsMemory(offset, count), ct).AsTask();

        public override int Read(byte[] buffer, int offset, int count)
        {
            var n = inner.Read(buffer, offset, count);
            if ((_read += n) > limit) throw new TooLongException();
            return n;
        }

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => _read; set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        // The inner stream belongs to the request.
        protected override void Dispose(bool disposing) { }
        public override ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }
}
