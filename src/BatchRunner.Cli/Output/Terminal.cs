using System.Text.Json;
using Spectre.Console;

namespace BatchRunner.Cli.Output;

public enum OutputFormat { Text, Json }

/// <summary>
/// Where the CLI writes. Results (tables, JSON, a job's stdout) go to stdout; progress, state changes and errors to
/// stderr, so <c>batchrunner run ... &gt; out.txt</c> keeps the job's output clean. On a terminal, stderr gets a live
/// progress display and colours; when stderr is not a terminal (a pipe, a file, CI) it gets plain lines with no escape
/// sequences at all, and <c>NO_COLOR</c> (any value) turns colours off even on a terminal.
/// </summary>
internal sealed class Terminal
{
    /// <param name="interactive">Whether stderr is a terminal; detected when null.</param>
    public Terminal(OutputFormat format, IReadOnlyDictionary<string, string?> env, bool? interactive = null)
    {
        Format = format;
        var term = env.GetValueOrDefault("TERM");
        Interactive = interactive ?? (!Console.IsErrorRedirected && term is not "dumb");
        Color = Interactive && string.IsNullOrEmpty(env.GetValueOrDefault("NO_COLOR"));
        Err = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(Console.Error),
            Ansi = Interactive ? AnsiSupport.Yes : AnsiSupport.No,
            ColorSystem = Color ? ColorSystemSupport.Detect : ColorSystemSupport.NoColors,
            Interactive = Interactive ? InteractionSupport.Yes : InteractionSupport.No,
        });
    }

    public OutputFormat Format { get; }
    public bool Json => Format == OutputFormat.Json;
    /// <summary>stderr is a terminal: live progress instead of plain lines.</summary>
    public bool Interactive { get; }
    public bool Color { get; }
    /// <summary>stderr, for progress and state lines.</summary>
    public IAnsiConsole Err { get; }

    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    /// <summary>A result as JSON on stdout, in the API's shape.</summary>
    public static void WriteJson(JsonElement json)
    {
        Console.Out.WriteLine(json.ValueKind == JsonValueKind.Undefined ? "null" : JsonSerializer.Serialize(json, Indented));
    }

    /// <summary>An informational line on stderr (plain text; markup only for the colour of <paramref name="style"/>).</summary>
    public void Info(string text, string? style = null)
    {
        if (Color && style is not null) Err.MarkupLine($"[{style}]{Markup.Escape(text)}[/]");
        else Console.Error.WriteLine(text);
    }

    /// <summary>A failure line on stderr: "batchrunner: message", then indented details.</summary>
    public void Error(string message, IReadOnlyList<string> details)
    {
        if (Color) Err.MarkupLine($"[red]batchrunner:[/] {Markup.Escape(message)}");
        else Console.Error.WriteLine($"batchrunner: {message}");
        foreach (var d in details) Console.Error.WriteLine("  " + d);
    }

    /// <summary>A state word in its colour: green for success, red for failure, yellow while it waits.</summary>
    public string StateMarkup(string state) => !Color ? Markup.Escape(state) : state switch
    {
        "succeeded" => $"[green]{state}[/]",
        "failed" => $"[red]{state}[/]",
        "cancelled" => $"[grey]{state}[/]",
        "running" => $"[blue]{state}[/]",
        _ => $"[yellow]{Markup.Escape(state)}[/]",
    };

    /// <summary>Rows as aligned columns on stdout (like <c>docker ps</c>): plain text, safe to pipe into awk or cut.</summary>
    public static void WriteTable(IReadOnlyList<string> header, IEnumerable<IReadOnlyList<string?>> rows)
    {
        var all = new List<IReadOnlyList<string?>> { header };
        all.AddRange(rows);
        var widths = new int[header.Count];
        foreach (var r in all)
            for (int i = 0; i < header.Count; i++) widths[i] = Math.Max(widths[i], (r[i] ?? "").Length);
        foreach (var r in all)
        {
            var cells = Enumerable.Range(0, header.Count).Select(i => i == header.Count - 1 ? r[i] ?? "" : (r[i] ?? "").PadRight(widths[i]));
            Console.Out.WriteLine(string.Join("  ", cells).TrimEnd());
        }
    }
}

/// <summary>Human units: bytes in binary units, durations in s/min/h.</summary>
internal static class Units
{
    public static string Bytes(long bytes)
    {
        string[] units = ["B", "KiB", "MiB", "GiB", "TiB"];
        double v = bytes;
        int u = 0;
        while (v >= 1024 && u < units.Length - 1) { v /= 1024; u++; }
        return u == 0 ? $"{bytes} B" : string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{v:0.0} {units[u]}");
    }

    public static string Duration(TimeSpan d) =>
        d.TotalSeconds < 60 ? FormattableString.Invariant($"{d.TotalSeconds:0.0} s")
        : d.TotalMinutes < 60 ? FormattableString.Invariant($"{(int)d.TotalMinutes} min {d.Seconds} s")
        : FormattableString.Invariant($"{(int)d.TotalHours} h {d.Minutes} min");
}
