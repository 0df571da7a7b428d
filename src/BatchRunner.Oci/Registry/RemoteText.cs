using System.Globalization;
using System.Text;

namespace BatchRunner.Oci.Registry;

/// <summary>
/// Text a remote party chose (a registry's error message, a media type from a manifest, a helper's stderr), made fit
/// to quote in an error or a log line: control and format characters (newlines, escapes, bidi overrides) become
/// spaces, runs of white space one space, and the result is cut to a short length. A job's error message must not
/// relay a remote body: that would turn the node into a proxy for reading whatever a URL answers.
/// </summary>
public static class RemoteText
{
    public const int DefaultMaxChars = 200;

    public static string Quote(string? text, int maxChars = DefaultMaxChars)
    {
        if (string.IsNullOrEmpty(text)) return "";
        var sb = new StringBuilder(Math.Min(text.Length, maxChars + 1));
        var space = false;
        foreach (var rune in text.EnumerateRunes())
        {
            var category = Rune.GetUnicodeCategory(rune);
            var blank = Rune.IsWhiteSpace(rune) || Rune.IsControl(rune) || category is UnicodeCategory.Format
                or UnicodeCategory.LineSeparator or UnicodeCategory.ParagraphSeparator or UnicodeCategory.Surrogate or UnicodeCategory.OtherNotAssigned;
            if (blank)
            {
                space = sb.Length > 0;
                continue;
            }
            if (space) sb.Append(' ');
            space = false;
            if (sb.Length + rune.Utf16SequenceLength > maxChars) return sb.ToString().TrimEnd() + "…";
            sb.Append(rune.ToString());
        }
        return sb.ToString();
    }
}
