using System.Globalization;
using System.Text.RegularExpressions;

namespace BatchRunner.Core;

/// <summary>
/// Byte quantities as Kubernetes writes them: a plain integer of bytes, or a number with a decimal
/// (k, M, G, T, P, E) or binary (Ki, Mi, Gi, Ti, Pi, Ei) suffix. "64Mi" = 67108864, "512M" = 512000000.
/// </summary>
public static partial class Quantity
{
    [GeneratedRegex(@"^\s*(?<num>[0-9]+(\.[0-9]+)?)\s*(?<unit>[kKMGTPE]i?|[Bb])?\s*$")]
    private static partial Regex Pattern();

    public static bool TryParseBytes(string? text, out long bytes)
    {
        bytes = 0;
        if (string.IsNullOrWhiteSpace(text)) return false;
        var m = Pattern().Match(text);
        if (!m.Success) return false;
        if (!decimal.TryParse(m.Groups["num"].Value, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var num))
            return false;
        decimal mult = m.Groups["unit"].Value switch
        {
            "" or "B" or "b" => 1m,
            "k" or "K" => 1e3m,
            "M" => 1e6m,
            "G" => 1e9m,
            "T" => 1e12m,
            "P" => 1e15m,
            "E" => 1e18m,
            "Ki" => 1024m,
            "Mi" => 1024m * 1024,
            "Gi" => 1024m * 1024 * 1024,
            "Ti" => 1024m * 1024 * 1024 * 1024,
            "Pi" => 1024m * 1024 * 1024 * 1024 * 1024,
            "Ei" => 1024m * 1024 * 1024 * 1024 * 1024 * 1024,
            _ => -1m,
        };
        if (mult < 0) return false;
        decimal value;
        try { value = decimal.Ceiling(num * mult); }
        catch (OverflowException) { return false; }
        if (value > long.MaxValue) return false;
        bytes = (long)value;
        return true;
    }

    /// <summary>Formats bytes with the largest binary suffix that divides them exactly ("64Mi"), else plain bytes.</summary>
    public static string FormatBytes(long bytes)
    {
        string[] units = ["Ei", "Pi", "Ti", "Gi", "Mi", "Ki"];
        for (int i = 0; i < units.Length; i++)
        {
            long f = 1L << (10 * (units.Length - i));
            if (bytes != 0 && bytes % f == 0) return (bytes / f).ToString(CultureInfo.InvariantCulture) + units[i];
        }
        return bytes.ToString(CultureInfo.InvariantCulture);
    }

    /// <summary>For people, not for parsing: "1.5 GiB", "300 MiB", "512 B" (three significant digits at most).</summary>
    public static string FormatApproximate(long bytes)
    {
        string[] units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
        double value = bytes;
        var unit = 0;
        while (Math.Abs(value) >= 1024 && unit < units.Length - 1) { value /= 1024; unit++; }
        var text = unit == 0 || value >= 100 ? value.ToString("0", CultureInfo.InvariantCulture)
            : value >= 10 ? value.ToString("0.#", CultureInfo.InvariantCulture) : value.ToString("0.##", CultureInfo.InvariantCulture);
        return $"{text} {units[unit]}";
    }
}
