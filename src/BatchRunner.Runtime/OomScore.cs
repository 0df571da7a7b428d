using System.Globalization;

namespace BatchRunner.Runtime;

/// <summary>
/// A process's oom_score_adj (-1000..1000): the higher, the sooner the kernel's OOM killer takes it when
/// the machine runs out of memory. Anyone may raise a value; lowering it below what it was needs
/// CAP_SYS_RESOURCE, which root has on a normal host but not in every container.
/// </summary>
public static class OomScore
{
    private const int CapSysResource = 24;

    /// <summary>Whether this process may lower oom_score_adj values (its own, or a child's before it drops privileges).</summary>
    public static bool CanLower() => HasEffectiveCapability(File.ReadLines("/proc/self/status"), CapSysResource);

    /// <summary>Sets this process's value; false (and unchanged) when the kernel refuses.</summary>
    public static bool TrySetOwn(int value)
    {
        try
        {
            File.WriteAllText("/proc/self/oom_score_adj", value.ToString(CultureInfo.InvariantCulture));
            return true;
        }
        catch (Exception e) when (e is UnauthorizedAccessException or IOException)
        {
            return false;
        }
    }

    public static int? Read(int pid)
    {
        try { return int.Parse(File.ReadAllText($"/proc/{pid}/oom_score_adj").Trim(), CultureInfo.InvariantCulture); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException) { return null; }
    }

    internal static bool HasEffectiveCapability(IEnumerable<string> statusLines, int capability)
    {
        foreach (var line in statusLines)
            if (line.StartsWith("CapEff:", StringComparison.Ordinal))
                return ulong.TryParse(line["CapEff:".Length..].Trim(), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var caps)
                       && (caps & (1UL << capability)) != 0;
        return false;
    }
}
