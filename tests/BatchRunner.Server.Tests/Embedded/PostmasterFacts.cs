using BatchRunner.Server.Storage.Embedded;

namespace BatchRunner.Server.Tests.Embedded;

public sealed class PostmasterFacts
{
    [Theory]
    [InlineData(137, "killed by signal 9 (SIGKILL)")]
    [InlineData(134, "killed by signal 6 (SIGABRT)")]
    [InlineData(139, "killed by signal 11 (SIGSEGV)")]
    [InlineData(0, "exited with status 0")]
    [InlineData(1, "exited with status 1")]
    public void Describe_NamesTheSignal_WhenTheStatusIs128PlusN(int status, string expected) =>
        Assert.Equal(expected, Postmaster.Describe(status));
}
