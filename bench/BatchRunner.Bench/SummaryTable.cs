using System.Globalization;

namespace BatchRunner.Bench;

/// <summary>
/// One row of the `summary` table (issue 14's figures): what was measured, BatchRunner's figure, the baseline measured
/// side by side in the same run, their ratio (BatchRunner ÷ baseline, when both are numbers of the same unit), the
/// issue's target and whether it was met. Figures are strings with their unit, so each bench says how it measured.
/// </summary>
public sealed record SummaryRow(string Area, string What, string BatchRunner, string Baseline, double? Ratio, string Target, bool? Met);

/// <summary>Collects rows from each part of `summary` and prints them as one Markdown table.</summary>
public sealed class SummaryTable
{
    private readonly List<SummaryRow> _rows = [];

    public IReadOnlyList<SummaryRow> Rows => _rows;

    public void Add(SummaryRow row)
    {
        _rows.Add(row);
        Console.WriteLine($"  -> {row.What}: {row.BatchRunner} vs {row.Baseline}{(row.Ratio is { } r ? $" ({Ms(r, 2)}×)" : "")}");
    }

    /// <summary>A part that could not run says so in the table instead of vanishing from it.</summary>
    public void Failed(string area, string what, Exception e) =>
        Add(new SummaryRow(area, what, $"FAILED: {e.GetType().Name}: {e.Message.Split('\n')[0]}", "—", null, "—", false));

    public static string Ms(double value, int decimals = 1) => value.ToString("F" + decimals, CultureInfo.InvariantCulture);

    public void Print(TextWriter output)
    {
        output.WriteLine();
        output.WriteLine("| area | what | BatchRunner | baseline (same run) | ratio | target | met |");
        output.WriteLine("|---|---|---|---|---|---|---|");
        foreach (var r in _rows)
            output.WriteLine($"| {r.Area} | {r.What} | {r.BatchRunner} | {r.Baseline} | {(r.Ratio is { } x ? Ms(x, 2) + "×" : "—")} | {r.Target} | {(r.Met switch { true => "yes", false => "**no**", null => "—" })} |");
    }
}
