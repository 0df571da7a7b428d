using System.Net;
using System.Text.Json;
using BatchRunner.Testing;
using static BatchRunner.Testing.BatchRunnerClient;

namespace BatchRunner.Server.Tests.Workflows;

/// <summary>dependsOn and inputsFrom through the HTTP API, on the shared server (real runc, PostgreSQL, registry).</summary>
[Collection(ServerCollection.Name)]
public sealed class DependencyFacts(ServerFixture f)
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60);

    private object Job(string script, object[]? dependsOn = null, object[]? inputsFrom = null) => new
    {
        image = f.Busybox,
        command = new[] { "/bin/sh", "-c", script },
        resources = new { cpus = 0.1, memory = "16Mi" },
        dependsOn,
        inputsFrom,
    };

    [Fact]
    public async Task Chain_PassesFilesAlong_WithInputsFrom()
    {
        var step1 = await f.Api.SubmitIdAsync(Job("mkdir -p /outputs/data; sleep 0.5; echo '3 4 5' > /outputs/data/numbers.txt; echo noise > /outputs/log.txt"));
        // Only step1's data/ directory, as the root of /inputs/STEP1/.
        var step2 = await f.Api.SubmitIdAsync(Job(
            $"test ! -e /inputs/{step1}/log.txt || exit 9; s=0; for n in $(cat /inputs/{step1}/numbers.txt); do s=$((s+n)); done; echo $s > /outputs/sum.txt",
            inputsFrom: [new { job = step1, path = "data" }]));
        var step3 = await f.Api.SubmitAsync(Job(
            $"echo \"sum=$(cat /inputs/{step2}/sum.txt) from {step2}\" > /outputs/report.txt; touch /inputs/{step2}/x 2>/dev/null && echo writable || echo read-only",
            inputsFrom: [new { job = step2 }]));

        // Step 3 waits while step 2 has not even started; inputsFrom implies a "succeeded" dependency.
        Assert.Equal("waiting", State(step3));
        Assert.Equal(step2, step3.GetProperty("dependsOn")[0].GetProperty("job").GetString());
        Assert.Equal("succeeded", step3.GetProperty("dependsOn")[0].GetProperty("condition").GetString());
        var stdout = await f.Api.SucceededStdoutAsync(Id(step3), Deadline);

        Assert.Equal($"sum=12 from {step2}\n", await f.Api.OutputAsync(Id(step3), "report.txt"));
        Assert.Equal("read-only\n", stdout);
        var done2 = await f.Api.GetJobAsync(step2);
        var done3 = await f.Api.GetJobAsync(Id(step3));
        // Each step started only once the one before had ended.
        Assert.True(done2.GetProperty("startedAt").GetDateTimeOffset() >= (await f.Api.GetJobAsync(step1)).GetProperty("finishedAt").GetDateTimeOffset());
        Assert.True(done3.GetProperty("startedAt").GetDateTimeOffset() >= done2.GetProperty("finishedAt").GetDateTimeOffset());
    }

    [Fact]
    public async Task AFailure_CancelsTheRestOfTheChain_WithDependencyFailed_NamingTheDependency()
    {
        var step1 = await f.Api.SubmitIdAsync(Job("sleep 0.3; exit 4"));
        var step2 = await f.Api.SubmitIdAsync(Job("echo never", dependsOn: [new { job = step1 }]));
        var step3 = await f.Api.SubmitIdAsync(Job("echo never", dependsOn: [new { job = step2, condition = "succeeded" }]));

        var done3 = await f.Api.WaitForFinalAsync(step3, Deadline);
        var done2 = await f.Api.GetJobAsync(step2);

        Assert.Equal("failed", State(await f.Api.GetJobAsync(step1)));
        foreach (var (done, dependency, ended) in new[] { (done2, step1, "failed (exit_code)"), (done3, step2, "cancelled (dependency_failed)") })
        {
            Assert.Equal("cancelled", State(done));
            Assert.Equal("dependency_failed", done.GetProperty("reason").GetString());
            Assert.Equal($"dependency {dependency} ended {ended}, so its condition \"succeeded\" can never hold", done.GetProperty("message").GetString());
            Assert.Equal(0, done.GetProperty("attempt").GetInt32());
        }
    }

    [Fact]
    public async Task FinishedAndFailedConditions_RunAfterAFailure()
    {
        var failing = await f.Api.SubmitIdAsync(Job("sleep 0.3; exit 2"));
        var cleanup = await f.Api.SubmitIdAsync(Job("echo cleanup", dependsOn: [new { job = failing, condition = "finished" }]));
        var onFailure = await f.Api.SubmitIdAsync(Job("echo alert", dependsOn: [new { job = failing, condition = "failed" }]));
        var onSuccess = await f.Api.SubmitIdAsync(Job("echo never", dependsOn: [new { job = failing, condition = "succeeded" }]));

        Assert.Equal("cleanup\n", await f.Api.SucceededStdoutAsync(cleanup, Deadline));
        Assert.Equal("alert\n", await f.Api.SucceededStdoutAsync(onFailure, Deadline));
        Assert.Equal("dependency_failed", (await f.Api.WaitForFinalAsync(onSuccess, Deadline)).GetProperty("reason").GetString());
    }

    [Fact]
    public async Task ADependencyOnAnArray_WaitsForAllItsChildren()
    {
        var array = await f.Api.SubmitIdAsync(new
        {
            image = f.Busybox,
            command = new[] { "/bin/sh", "-c", "sleep 0.$BATCHRUNNER_ARRAY_INDEX; echo $BATCHRUNNER_ARRAY_INDEX > /outputs/part.txt" },
            resources = new { cpus = 0.1, memory = "16Mi" },
            array = new { size = 3, parallelism = 3 },
        });
        // Every child's outputs, under /inputs/ARRAY/INDEX/.
        var after = await f.Api.SubmitIdAsync(Job($"cat /inputs/{array}/0/part.txt /inputs/{array}/1/part.txt /inputs/{array}/2/part.txt",
            inputsFrom: [new { job = array }]));

        Assert.Equal("0\n1\n2\n", await f.Api.SucceededStdoutAsync(after, Deadline));
        var started = (await f.Api.GetJobAsync(after)).GetProperty("startedAt").GetDateTimeOffset();
        Assert.All(await f.Api.ChildrenAsync(array), c => Assert.True(c.GetProperty("finishedAt").GetDateTimeOffset() <= started));
    }

    [Fact]
    public async Task CancellingAWaitingJob_EndsItAtOnce_AndCascades()
    {
        var slow = await f.Api.SubmitIdAsync(Job("sleep 60"));
        var waiting = await f.Api.SubmitIdAsync(Job("echo never", dependsOn: [new { job = slow }]));
        var next = await f.Api.SubmitIdAsync(Job("echo never", dependsOn: [new { job = waiting }]));

        var cancelled = await f.Api.CancelAsync(waiting);
        Assert.Equal(HttpStatusCode.Accepted, cancelled.StatusCode);
        Assert.Equal("cancelled", State(JsonDocument.Parse(await cancelled.Content.ReadAsStringAsync()).RootElement));
        Assert.Equal("dependency_failed", (await f.Api.WaitForFinalAsync(next, Deadline)).GetProperty("reason").GetString());
        // The dependency itself is untouched by its dependents' cancellation (it may still be starting on a busy machine).
        Assert.Contains(State(await f.Api.GetJobAsync(slow)), new[] { "queued", "starting", "running" });
        await f.Api.CancelAsync(slow);
        await f.Api.WaitForFinalAsync(slow);
    }

    [Fact]
    public async Task Submit_RefusesUnknownAndMalformedDependencies_NamingTheField()
    {
        var known = await f.Api.SubmitIdAsync(Job("true"));
        var unknown = Guid.CreateVersion7().ToString();
        var cases = new (object Body, string Field, string Text)[]
        {
            (Job("true", dependsOn: [new { job = known }, new { job = unknown }]), "dependsOn[1].job", $"no job with id {unknown}"),
            (Job("true", inputsFrom: [new { job = unknown }]), "inputsFrom[0].job", $"no job with id {unknown}"),
            (Job("true", dependsOn: [new { job = "not-an-id" }]), "dependsOn[0].job", "is not a job id"),
            (Job("true", dependsOn: [new { job = known }, new { job = known }]), "dependsOn[1].job", "named twice"),
            (Job("true", dependsOn: [new { job = known, condition = "afterok" }]), "dependsOn[0].condition", "succeeded, finished, failed"),
            (Job("true", inputsFrom: [new { job = known, path = "../etc" }]), "inputsFrom[0].path", "relative directory"),
        };
        foreach (var (body, field, text) in cases)
        {
            var response = await f.Api.PostJobAsync(body);
            var problem = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
            Assert.True(response.StatusCode == HttpStatusCode.BadRequest, problem.ToString());
            Assert.True(problem.GetProperty("errors").TryGetProperty(field, out var messages), $"{field} not in {problem}");
            Assert.Contains(text, messages[0].GetString());
        }
    }
}
