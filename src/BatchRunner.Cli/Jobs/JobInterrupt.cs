using System.Runtime.InteropServices;
using BatchRunner.Cli.Http;
using BatchRunner.Cli.Output;

namespace BatchRunner.Cli.Jobs;

/// <summary>
/// Ctrl-C (SIGINT) while a job is followed: the first one asks the server to cancel the job and keeps following it to
/// its end (so the user sees it end <c>cancelled</c>); a second one stops waiting at once (<see cref="Abandoned"/>).
/// With <c>cancelJob</c> false (<c>submit --wait</c>: a batch job outlives its watcher) the first Ctrl-C only stops waiting.
/// </summary>
internal sealed class JobInterrupt : IDisposable
{
    private readonly PosixSignalRegistration _registration;
    private readonly CancellationTokenSource _abandon = new();
    private readonly ApiClient _api;
    private readonly Terminal _term;
    private readonly string _jobId;
    private readonly bool _cancelJob;
    private int _count;

    public JobInterrupt(ApiClient api, Terminal term, string jobId, bool cancelJob)
    {
        _api = api;
        _term = term;
        _jobId = jobId;
        _cancelJob = cancelJob;
        _registration = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
    }

    /// <summary>Cancelled when the user gave up waiting (a second Ctrl-C, or the first one when the job is not to be cancelled).</summary>
    public CancellationToken Abandoned => _abandon.Token;
    /// <summary>Whether a Ctrl-C came (the job's cancel was asked for, or waiting stopped).</summary>
    public bool Interrupted => Volatile.Read(ref _count) > 0;
    /// <summary>The server refused or could not take the cancel request.</summary>
    public string? CancelFailure { get; private set; }

    private void OnSignal(PosixSignalContext context)
    {
        context.Cancel = true; // the process stays up: it reports how the job ended
        var n = Interlocked.Increment(ref _count);
        if (n == 1 && _cancelJob)
        {
            _term.Info($"cancelling job {_jobId} (Ctrl-C again to stop waiting)", "yellow");
            _ = Task.Run(CancelAsync);
        }
        else
        {
            _term.Info(_cancelJob ? $"stopped waiting; job {_jobId} was asked to cancel" : $"stopped waiting; job {_jobId} goes on (batchrunner cancel {_jobId} to stop it)", "yellow");
            _abandon.Cancel();
        }
    }

    private async Task CancelAsync()
    {
        try
        {
            await _api.PostJsonAsync($"api/v1/jobs/{ApiClient.Escape(_jobId)}/cancel", null, _abandon.Token);
        }
        catch (CliException e)
        {
            // 409: it ended meanwhile, which the watcher shows anyway.
            CancelFailure = e.Message;
        }
        catch (OperationCanceledException) { }
    }

    public void Dispose()
    {
        _registration.Dispose();
        _abandon.Dispose();
    }
}
