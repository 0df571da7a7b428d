using BatchRunner.Server.Storage.Embedded;

namespace BatchRunner.Server.Tests.Embedded;

public sealed class PostmasterPidFileFacts
{
    [Theory]
    [InlineData("4242", 4242)]
    [InlineData("  4242  ", 4242)]
    [InlineData("-4242", 4242)] // a standalone backend writes its pid negated
    [InlineData("", null)]
    [InlineData(null, null)]
    [InlineData("garbage", null)]
    public void ParsePid_ReadsTheLockFilesFirstLine(string? line, int? pid) =>
        Assert.Equal(pid, PostmasterPidFile.ParsePid(line));
}
