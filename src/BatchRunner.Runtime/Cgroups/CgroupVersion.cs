namespace BatchRunner.Runtime.Cgroups;

/// <summary>How the host mounts cgroups.</summary>
public enum CgroupVersion
{
    /// <summary>Only v1 hierarchies (one mount per controller).</summary>
    V1,
    /// <summary>v1 controllers plus a cgroup2 mount (usually /sys/fs/cgroup/unified) that holds no
    /// resource controllers we use. Limits and stats come from v1; crun refuses this layout.</summary>
    Hybrid,
    /// <summary>The unified hierarchy mounted at the cgroup root.</summary>
    V2,
}

public static class CgroupVersionDetector
{
    public const string DefaultRoot = "/sys/fs/cgroup";

    /// <summary>Detects the layout of this process's mount namespace from /proc/self/mountinfo.</summary>
    public static CgroupVersion Detect(string cgroupRoot = DefaultRoot, string mountInfoPath = "/proc/self/mountinfo") =>
        Parse(File.ReadAllText(mountInfoPath), cgroupRoot);

    /// <summary>
    /// Classifies a mountinfo text: a cgroup2 mount exactly at <paramref name="cgroupRoot"/> is V2; any
    /// cgroup (v1) mount beneath it is V1, or Hybrid when a cgroup2 mount exists beside them.
    /// </summary>
    public static CgroupVersion Parse(string mountInfo, string cgroupRoot = DefaultRoot)
    {
        cgroupRoot = cgroupRoot.TrimEnd('/');
        bool v1 = false, v2Beside = false;
        foreach (var line in mountInfo.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            // "36 30 0:33 / /sys/fs/cgroup/freezer rw,relatime shared:14 - cgroup cgroup rw,freezer":
            // optional fields end at " - ", after which come the fs type and source.
            var sep = line.IndexOf(" - ", StringComparison.Ordinal);
            if (sep < 0) continue;
            var left = line[..sep].Split(' ');
            var right = line[(sep + 3)..].Split(' ');
            if (left.Length < 5 || right.Length < 1) continue;
            var mountPoint = UnescapeOctal(left[4]);
            var fsType = right[0];
            bool under = mountPoint == cgroupRoot || mountPoint.StartsWith(cgroupRoot + "/", StringComparison.Ordinal);
            if (!under) continue;
            if (fsType == "cgroup2")
            {
                if (mountPoint == cgroupRoot) return CgroupVersion.V2;
                v2Beside = true;
            }
            else if (fsType == "cgroup")
            {
                v1 = true;
            }
        }
        if (v1) return v2Beside ? CgroupVersion.Hybrid : CgroupVersion.V1;
        throw new InvalidOperationException($"no cgroup file system is mounted at or below {cgroupRoot}");
    }

    // mountinfo escapes space, tab, newline and backslash as \ooo.
    private static string UnescapeOctal(string s)
    {
        if (!s.Contains('\\')) return s;
        var sb = new System.Text.StringBuilder(s.Length);
        for (int i = 0; i < s.Length; i++)
        {
            if (s[i] == '\\' && IsOctal(s, i + 1))
            {
                sb.Append((char)Convert.ToInt32(s.Substring(i + 1, 3), 8));
                i += 3;
            }
            else sb.Append(s[i]);
        }
        return sb.ToString();
    }

    private static bool IsOctal(string s, int at) =>
        at + 3 <= s.Length && s.AsSpan(at, 3).IndexOfAnyExceptInRange('0', '7') < 0;
}
