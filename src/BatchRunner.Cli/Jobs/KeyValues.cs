using System.Globalization;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace BatchRunner.Cli.Jobs;

/// <summary>Parsing of the <c>run</c> flags that are not plain values: K=V pairs and durations.</summary>
internal static partial class KeyValues
{
    /// <summary>
    /// <c>K=V</c> pairs into an object. A bare <c>K</c> takes the value of the CLI's own environment variable K, as
    /// <c>docker run -e K</c> does, which keeps a secret out of the command line and the shell history.
    /// </summary>
    public static JsonObject? ToObject(IEnumerable<string>? pairs, string flag, IReadOnlyDictionary<string, string?>? env = null)
    {
        if (pairs is null) return null;
        var obj = new JsonObject();
        foreach (var pair in pairs)
        {
            var eq = pair.IndexOf('=');
            string key, value;
            if (eq >= 0)
            {
                key = pair[..eq];
                value = pair[(eq + 1)..];
            }
            else if (env is not null)
            {
                key = pair;
                value = env.GetValueOrDefault(pair) ?? throw new CliException($"{flag} {pair}: no value given and no such variable in the environment", exitCode: ExitCodes.Usage);
            }
            else throw new CliException($"{flag} \"{pair}\": expected KEY=VALUE", exitCode: ExitCodes.Usage);
            if (key.Length == 0) throw new CliException($"{flag} \"{pair}\": the key is empty", exitCode: ExitCodes.Usage);
            obj[key] = value;
        }
        return obj.Count == 0 ? null : obj;
    }

    /// <summary>Seconds from "90", "90s", "15m", "2h", "1h30m".</summary>
    public static int Seconds(string text, string flag)
    {
        var t = text.Trim();
        if (int.TryParse(t, NumberStyles.None, CultureInfo.InvariantCulture, out var plain)) return plain;
        var m = DurationPattern().Match(t);
        if (!m.Success || t.Length == 0)
            throw new CliException($"{flag} \"{text}\": expected seconds or a duration such as 90s, 15m, 2h, 1h30m", exitCode: ExitCodes.Usage);
        long total = 0;
        foreach (var (group, unit) in new[] { ("h", 3600L), ("m", 60L), ("s", 1L) })
            if (m.Groups[group].Success) total += long.Parse(m.Groups[group].Value, CultureInfo.InvariantCulture) * unit;
        if (total > int.MaxValue) throw new CliException($"{flag} \"{text}\" is too long", exitCode: ExitCodes.Usage);
        return (int)total;
    }

    [GeneratedRegex(@"^(?:(?<h>[0-9]+)h)?(?:(?<m>[0-9]+)m)?(?:(?<s>[0-9]+)s)?$")]
    private static partial Regex DurationPattern();
}
