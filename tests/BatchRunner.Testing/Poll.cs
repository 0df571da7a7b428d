using System.Diagnostics;

namespace BatchRunner.Testing;

/// <summary>Poll with a deadline instead of sleeping a fixed time.</summary>
public static class Poll
{
    public static async Task<T> UntilAsync<T>(Func<Task<T>> probe, Func<T, bool> done, TimeSpan timeout, string what, int intervalMs = 50)
    {
        var sw = Stopwatch.StartNew();
        T last = await probe();
        while (!done(last))
        {
            if (sw.Elapsed > timeout) throw new TimeoutException($"timed out after {timeout.TotalSeconds:0.#}s waiting for {what}; last value: {last}");
            await Task.Delay(intervalMs);
            last = await probe();
        }
        return last;
    }

    public static Task UntilAsync(Func<bool> condition, TimeSpan timeout, string what, int intervalMs = 50) =>
        UntilAsync(() => Task.FromResult(condition()), ok => ok, timeout, what, intervalMs);
}
