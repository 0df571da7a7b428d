using System.Diagnostics;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace BatchRunner.Server.Tests.Observability;

/// <summary>
/// docker-compose.yml as Debian's docker-compose 1.29 reads it (<c>config</c> validates and normalises
/// without an engine), the files it mounts from the repository, and the Dockerfile's build inputs.
/// </summary>
public sealed partial class DeploymentFilesFacts
{
    private static readonly string[] RequiredServices = ["postgres", "batchrunner", "worker", "prometheus", "grafana"];

    [Fact]
    public async Task Compose_IsValid_AndEveryMountedRepoFileExists()
    {
        // docker-compose is Python, and its normalised output is YAML: PyYAML (its dependency) turns it into JSON.
        var json = await RunAsync("/bin/sh", ["-c", "docker-compose -f \"$1\" --profile workers config | python3 -c 'import sys, json, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)'", "sh",
            Path.Combine(RepoPaths.Root, "docker-compose.yml")], ("BATCHRUNNER_API_KEY", "compose-test-key"));
        using var doc = JsonDocument.Parse(json);
        var services = doc.RootElement.GetProperty("services");
        foreach (var name in RequiredServices)
            Assert.True(services.TryGetProperty(name, out _), $"service {name} missing");

        var mounted = new List<string>();
        foreach (var service in services.EnumerateObject())
        {
            Assert.True(service.Value.TryGetProperty("healthcheck", out var hc) && hc.TryGetProperty("test", out _), $"service {service.Name} has no healthcheck");
            if (!service.Value.TryGetProperty("volumes", out var volumes)) continue;
            foreach (var v in volumes.EnumerateArray())
            {
                // Normalised short syntax: SOURCE:TARGET[:MODE] with bind sources made absolute.
                var source = v.ValueKind == JsonValueKind.String ? v.GetString()!.Split(':')[0] : v.GetProperty("source").GetString()!;
                if (!source.StartsWith(RepoPaths.Root + "/", StringComparison.Ordinal)) continue;
                mounted.Add(source);
                Assert.True(File.Exists(source) || Directory.Exists(source), $"service {service.Name} mounts {source}, which is not in the repository");
            }
        }
        // Prometheus gets its scrape config, Grafana its provisioning and dashboards.
        Assert.Contains(Path.Combine(RepoPaths.Root, "dashboards/prometheus/prometheus.yml"), mounted);
        Assert.Contains(Path.Combine(RepoPaths.Root, "dashboards/grafana/provisioning"), mounted);
        Assert.Contains(Path.Combine(RepoPaths.Root, "dashboards/grafana/dashboards"), mounted);

        // The provisioning points Grafana at the directory the dashboards are mounted on.
        var grafanaVolumes = services.GetProperty("grafana").GetProperty("volumes").EnumerateArray().Select(v => v.GetString()!).ToList();
        var dashboardsTarget = grafanaVolumes.Single(v => v.StartsWith(Path.Combine(RepoPaths.Root, "dashboards/grafana/dashboards") + ":", StringComparison.Ordinal)).Split(':')[1];
        var provider = await File.ReadAllTextAsync(Path.Combine(RepoPaths.Root, "dashboards/grafana/provisioning/dashboards/batchrunner.yml"));
        Assert.Contains($"path: {dashboardsTarget}", provider);
        var home = services.GetProperty("grafana").GetProperty("environment").GetProperty("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH").GetString()!;
        Assert.StartsWith(dashboardsTarget + "/", home);
        Assert.True(File.Exists(Path.Combine(RepoPaths.Dashboards, Path.GetFileName(home))), $"home dashboard {home} is not in the repository");
    }

    [Fact]
    public async Task Compose_RefusesToStartWithoutAnApiKey()
    {
        var psi = new ProcessStartInfo("docker-compose") { ArgumentList = { "-f", Path.Combine(RepoPaths.Root, "docker-compose.yml"), "config", "-q" }, RedirectStandardError = true, RedirectStandardOutput = true };
        psi.Environment.Remove("BATCHRUNNER_API_KEY");
        using var p = Process.Start(psi)!;
        var stderr = await p.StandardError.ReadToEndAsync();
        await p.WaitForExitAsync();
        Assert.NotEqual(0, p.ExitCode);
        Assert.Contains("BATCHRUNNER_API_KEY", stderr);
    }

    [Fact]
    public void Dockerfile_CopiesOnlyFilesThatExist_AndShipsRunc()
    {
        var dockerfile = File.ReadAllText(Path.Combine(RepoPaths.Root, "Dockerfile"));
        Assert.Matches(@"(?m)^FROM .* AS build$", dockerfile);
        Assert.Matches(@"(?m)^FROM .* AS runtime$", dockerfile);
        Assert.Contains("runc", dockerfile);
        foreach (Match m in CopyFromContext().Matches(dockerfile))
            foreach (var source in m.Groups["sources"].Value.Split(' ', StringSplitOptions.RemoveEmptyEntries))
                Assert.True(File.Exists(Path.Combine(RepoPaths.Root, source)) || Directory.Exists(Path.Combine(RepoPaths.Root, source)),
                    $"Dockerfile copies {source}, which is not in the repository");
    }

    [GeneratedRegex(@"(?m)^COPY[ \t]+(?!--from)(?<sources>(?:\S+[ \t]+)+)\S+[ \t]*$")]
    private static partial Regex CopyFromContext();

    private static async Task<string> RunAsync(string file, string[] args, params (string Name, string Value)[] env)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = RepoPaths.Root };
        foreach (var a in args) psi.ArgumentList.Add(a);
        foreach (var (n, v) in env) psi.Environment[n] = v;
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await p.WaitForExitAsync(cts.Token);
        Assert.True(p.ExitCode == 0, $"{file} {string.Join(' ', args)} exited {p.ExitCode}: {await stderr}");
        return await stdout;
    }
}
