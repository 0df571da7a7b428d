namespace BatchRunner.Oci.Store;

/// <summary>
/// Runs at most one operation per key at a time; callers that arrive while it runs share its outcome.
/// </summary>
/// <remarks>
/// The shared operation gets its own cancellation token, cancelled only when every waiter has given up, so one
/// cancelled job does not fail the download another job is waiting for. A finished operation (success or failure)
/// is forgotten: the next caller starts afresh, which is what a retry after a failure needs.
/// </remarks>
internal sealed class SingleFlight
{
    private readonly Dictionary<string, Flight> _flights = new();

    private sealed class Flight
    {
        public required CancellationTokenSource Cts { get; init; }
        public required Task Task { get; init; }
        public int Waiters;
    }

    /// <param name="joined">Set to true when this caller joined an operation someone else started.</param>
    public async Task RunAsync(string key, Func<CancellationToken, Task> work, CancellationToken ct, Action? joined = null)
    {
        Flight flight;
        Task<Task>? toStart = null;
        lock (_flights)
        {
            if (!_flights.TryGetValue(key, out flight!) || flight.Cts.IsCancellationRequested)
            {
                var cts = new CancellationTokenSource();
                toStart = new Task<Task>(() => work(cts.Token));
                var f = new Flight { Cts = cts, Task = toStart.Unwrap() };
                flight = f;
                _flights[key] = f;
                _ = f.Task.ContinueWith(_ =>
                {
                    lock (_flights)
                    {
                        if (_flights.TryGetValue(key, out var current) && current == f) _flights.Remove(key);
                    }
                }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
            }
            flight.Waiters++;
        }
        if (toStart is not null) toStart.Start(TaskScheduler.Default);
        else joined?.Invoke();

        try
        {
            await flight.Task.WaitAsync(ct);
        }
        finally
        {
            lock (_flights)
            {
                if (--flight.Waiters == 0 && !flight.Task.IsCompleted) flight.Cts.Cancel();
            }
        }
    }
}
