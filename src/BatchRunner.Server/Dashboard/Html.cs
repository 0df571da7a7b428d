using System.Globalization;
using System.Net;
using System.Text;

namespace BatchRunner.Server.Dashboard;

/// <summary>HTML for the dashboard pages: everything a job or an operator wrote is encoded before it is shown.</summary>
internal static class Html
{
    public static string H(object? value) => WebUtility.HtmlEncode(Convert.ToString(value, CultureInfo.InvariantCulture) ?? "");

    /// <summary>A name/value row of a two-column table; <paramref name="html"/> is already encoded.</summary>
    public static void Row(StringBuilder sb, string name, string html) => sb.Append($"<tr><th style=\"width:14em\">{H(name)}</th><td>{html}</td></tr>");

    public static string Time(DateTimeOffset? t) => t?.ToString("u", CultureInfo.InvariantCulture) ?? "-";
}
