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

    /// <summary>
    /// Bytes for a person to read, as a quantity they could write back: the largest binary suffix that keeps the
    /// number at least 1, to one decimal ("64Mi", "21.5Gi" for a node's 22586940Ki). For messages and views; a spec
    /// echoed back uses the exact <see cref="FormatBytes"/>.
    /// </summary>
    public static string Human(long bytes)
    {
        string[] units = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
        if (Math.Abs(bytes) < 1024) return bytes.ToString(CultureInfo.InvariantCulture);
        var i = 0;
        var value = bytes / 1024.0;
        while (Math.Abs(value) >= 1024 && i < units.Length - 1) { value /= 1024; i++; }
        return value.ToString("0.#", CultureInfo.InvariantCulture) + units[i];
    }

    /// <summary>"1 GPU", "2 GPUs", "0.5 CPU": the noun in the plural only for more than one.</summary>
    public static string Count(double n, string noun) =>
        $"{n.ToString("0.###", CultureInfo.InvariantCulture)} {noun}{(n > 1 ? "s" : "")}";
}
