using BatchRunner.Server.Api;
using Microsoft.AspNetCore.Http;

namespace BatchRunner.Server.Tests;

/// <summary>What the request log shows of a path that matched no route: its first segment, in safe characters only.</summary>
public sealed class RequestLogFacts
{
    [Theory]
    [InlineData("", "/")]
    [InlineData("/", "/")]
    [InlineData("/hangfire", "/hangfire")]
    [InlineData("/hangfire/", "/hangfire")]
    [InlineData("/hangfire/jobs/details/7", "/hangfire/*")]
    [InlineData("/a\nb c/d", "/abc/*")]
    [InlineData("/../etc/passwd", "/../*")]
    public void Unrouted_ShowsOnlyTheFirstSegment_WhenNoRouteMatched(string path, string shown) =>
        Assert.Equal(shown, RequestLog.Unrouted(new PathString(path.Length == 0 ? null : path)));

    [Fact]
    public void Unrouted_TruncatesALongSegment_WhenAClientSendsOne() =>
        Assert.Equal("/" + new string('x', 40) + "/*", RequestLog.Unrouted(new PathString("/" + new string('x', 500) + "/y")));
}
