using Spectre.Console;
using Spectre.Console.Rendering;

namespace BatchRunner.Cli.Output;

/// <summary>
/// A progress column shown only while its task has a known size (the image pull): while the job waits in its queue
/// the line is a spinner and the state, not an empty bar reading "0/1 byte".
/// </summary>
internal sealed class PullColumn(ProgressColumn inner) : ProgressColumn
{
    public override IRenderable Render(RenderOptions options, ProgressTask task, TimeSpan deltaTime) =>
        task.IsIndeterminate ? Text.Empty : inner.Render(options, task, deltaTime);

    public override int? GetColumnWidth(RenderOptions options) => null;
}
