namespace BatchRunner.Server.Tests.Observability;

/// <summary>Files of the repository the tests run from (found by walking up to BatchRunner.sln).</summary>
public static class RepoPaths
{
    public static string Root { get; } = Find();

    public static string Dashboards => Path.Combine(Root, "dashboards", "grafana", "dashboards");

    private static string Find()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "BatchRunner.sln"))) return dir.FullName;
        throw new InvalidOperationException($"no BatchRunner.sln above {AppContext.BaseDirectory}");
    }
}
