using System.Collections.Concurrent;
using System.Globalization;
using System.Reflection;
using Microsoft.AspNetCore.Mvc;

namespace BatchRunner.Server.Api;

/// <summary>
/// Refuses a request whose query names a parameter its endpoint does not take (<c>?nmae=</c>, or a filter this
/// server does not have), or gives one a value of the wrong type (<c>?limit=ten</c>): <c>400</c> naming each, in the
/// API's words. Without it, a misspelt filter silently matches everything: a script that "cancels my jobs by label"
/// would cancel everyone's.
/// </summary>
/// <remarks>
/// What an endpoint takes is read from its handler, as minimal APIs bind it: every simple-typed parameter that is not
/// a route value or marked as coming from elsewhere ([FromServices], [FromBody], [FromHeader], ...); [FromQuery(Name)]
/// renames one. So a new endpoint is covered the moment it is mapped, with nothing to declare; a handler that reads
/// the query itself names the extra parameters with <see cref="AcceptsQuery"/>, and an endpoint whose query is not
/// ours (Prometheus' scrape) opts out with <see cref="AnyQuery"/>. Endpoints without a handler method (the Hangfire
/// dashboard is middleware) are not judged.
/// </remarks>
public static class QueryParameters
{
    private static readonly ConcurrentDictionary<Endpoint, Declared?> Cache = new();

    /// <summary>Query parameters an endpoint takes beyond those of its handler's signature (it reads them itself).</summary>
    public sealed record AcceptsQueryMetadata(IReadOnlyList<string> Names);

    /// <summary>The endpoint takes any query (it is not part of the API: e.g. the metrics scrape).</summary>
    public sealed record AnyQueryMetadata;

    public static TBuilder AcceptsQuery<TBuilder>(this TBuilder builder, params string[] names) where TBuilder : IEndpointConventionBuilder =>
        builder.WithMetadata(new AcceptsQueryMetadata(names));

    public static TBuilder AnyQuery<TBuilder>(this TBuilder builder) where TBuilder : IEndpointConventionBuilder =>
        builder.WithMetadata(new AnyQueryMetadata());

    /// <summary>Checks every routed request's query against its endpoint. Place after routing, before the endpoints run.</summary>
    public static IApplicationBuilder UseQueryParameterCheck(this IApplicationBuilder app) => app.Use(async (http, next) =>
    {
        if (http.GetEndpoint() is { } endpoint && http.Request.Query.Count > 0
            && Cache.GetOrAdd(endpoint, Declare) is { } declared
            && declared.Check(http.Request.Query) is { Count: > 0 } errors)
        {
            await TypedResults.ValidationProblem(errors, title: "The request's query is invalid",
                detail: $"{http.Request.Method} {declared.Route} takes {declared.Describe()}").ExecuteAsync(http);
            return;
        }
        await next(http);
    });

    /// <summary>The query parameters <paramref name="endpoint"/> takes (name → type), or null when it is not judged.</summary>
    public static IReadOnlyDictionary<string, Type>? DeclaredFor(Endpoint endpoint) => Declare(endpoint)?.Parameters;

    private static Declared? Declare(Endpoint endpoint)
    {
        if (endpoint.Metadata.GetMetadata<AnyQueryMetadata>() is not null) return null;
        if (endpoint.Metadata.GetMetadata<MethodInfo>() is not { } method) return null;
        var route = endpoint as RouteEndpoint;
        var routeValues = new HashSet<string>(route?.RoutePattern.Parameters.Select(p => p.Name) ?? [], StringComparer.OrdinalIgnoreCase);
        var parameters = new Dictionary<string, Type>(StringComparer.OrdinalIgnoreCase);
        foreach (var p in method.GetParameters())
        {
            if (p.Name is null) continue;
            var fromQuery = p.GetCustomAttribute<FromQueryAttribute>();
            if (fromQuery is null && (routeValues.Contains(p.Name) || p.GetCustomAttributes().Any(a =>
                    a is FromServicesAttribute or FromBodyAttribute or FromRouteAttribute or FromHeaderAttribute or FromFormAttribute
                        or FromKeyedServicesAttribute or AsParametersAttribute)))
                continue;
            var type = Nullable.GetUnderlyingType(p.ParameterType) ?? p.ParameterType;
            if (fromQuery is null && !IsSimple(type.IsArray ? type.GetElementType()! : type)) continue;
            parameters[fromQuery?.Name ?? p.Name] = type;
        }
        foreach (var extra in endpoint.Metadata.GetOrderedMetadata<AcceptsQueryMetadata>())
            foreach (var name in extra.Names) parameters.TryAdd(name, typeof(string));
        return new Declared("/" + (route?.RoutePattern.RawText ?? endpoint.DisplayName ?? "").Trim('/'), parameters);
    }

    private static bool IsSimple(Type t) =>
        t == typeof(string) || t.IsPrimitive || t.IsEnum || t == typeof(decimal) || t == typeof(Guid) || t == typeof(DateTimeOffset) || t == typeof(DateTime);

    private sealed record Declared(string Route, IReadOnlyDictionary<string, Type> Parameters)
    {
        public string Describe() => Parameters.Count == 0 ? "no query parameters"
            : "the query parameters " + string.Join(", ", Parameters.Keys.Order(StringComparer.Ordinal));

        public Dictionary<string, string[]> Check(IQueryCollection query)
        {
            var errors = new Dictionary<string, string[]>();
            foreach (var (name, values) in query)
            {
                if (!Parameters.TryGetValue(name, out var type))
                {
                    var close = Core.SubmissionShape.Closest(name, Parameters.Keys);
                    errors[name] = [close is null ? $"unknown query parameter; this endpoint takes {Describe()}"
                        : $"unknown query parameter (did you mean \"{close}\"?)"];
                    continue;
                }
                var element = type.IsArray ? type.GetElementType()! : type;
                if (!type.IsArray && element != typeof(string) && values.Count > 1)
                    errors[name] = ["given more than once; give it once"];
                else if (values.FirstOrDefault(v => !Parses(v, element)) is { } bad)
                    errors[name] = [$"expected {Noun(element)}, not \"{Shorten(bad)}\""];
            }
            return errors;
        }

        private static bool Parses(string? v, Type t)
        {
            if (t == typeof(string)) return true;
            if (string.IsNullOrEmpty(v)) return false;
            var ci = CultureInfo.InvariantCulture;
            if (t == typeof(bool)) return bool.TryParse(v, out _);
            if (t == typeof(int)) return int.TryParse(v, NumberStyles.Integer, ci, out _);
            if (t == typeof(long)) return long.TryParse(v, NumberStyles.Integer, ci, out _);
            if (t == typeof(double)) return double.TryParse(v, NumberStyles.Float, ci, out _);
            if (t == typeof(Guid)) return Guid.TryParse(v, out _);
            if (t == typeof(DateTimeOffset) || t == typeof(DateTime)) return DateTimeOffset.TryParse(v, ci, DateTimeStyles.RoundtripKind, out _);
            if (t.IsEnum) return Enum.TryParse(t, v, ignoreCase: true, out _);
            return true;
        }

        private static string Noun(Type t) =>
            t == typeof(bool) ? "true or false"
            : t == typeof(int) || t == typeof(long) ? "an integer"
            : t == typeof(double) ? "a number"
            : t == typeof(Guid) ? "a job id (a UUID)"
            : t == typeof(DateTimeOffset) || t == typeof(DateTime) ? "a time (RFC 3339, e.g. 2025-01-31T12:00:00Z)"
            : t.IsEnum ? "one of " + string.Join(", ", Enum.GetNames(t).Select(n => n.ToLowerInvariant()))
            : "a value";

        private static string Shorten(string? v) => v is null ? "" : v.Length <= 40 ? v : v[..40] + "…";
    }
}
