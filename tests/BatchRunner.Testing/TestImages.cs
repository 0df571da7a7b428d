using System.Diagnostics;
using System.Text;

namespace BatchRunner.Testing;

/// <summary>
/// Real images for tests, built with umoci from the host's static busybox and pushed with skopeo.
/// The OCI layout is built once per test process and pushed as often as needed (a push is ~0.1-0.3 s).
/// </summary>
/// <remarks>
/// Tags in the cached layout:
/// <list type="bullet">
/// <item><c>busybox</c>: one layer with /bin/busybox, every applet as a symlink, /etc/passwd (root, nobody 65534),
///   /etc/group, /tmp; config Cmd ["/bin/sh"], Env PATH=/usr/sbin:/usr/bin:/sbin:/bin.</item>
/// <item><c>layered</c>: busybox + a layer adding <see cref="LayeredKeptFile"/> and <see cref="LayeredDeletedFile"/>
///   + a layer that deletes <see cref="LayeredDeletedFile"/> (an <c>.wh.</c> whiteout) and adds <see cref="LayeredTopFile"/>.</item>
/// </list>
/// The <c>nobody</c> image (<see cref="PushNobodyAsync"/>) lives in a layout of its own, so that the shared
/// layout keeps exactly the two images above (tests import it whole).
/// </remarks>
public static class TestImages
{
    public const string BusyboxPath = "/bin/busybox";
    /// <summary>Added by layer 2 of the layered image, contains "keep\n".</summary>
    public const string LayeredKeptFile = "/opt/layer2/keep.txt";
    /// <summary>Added by layer 2 and deleted by layer 3 (whiteout) of the layered image.</summary>
    public const string LayeredDeletedFile = "/opt/layer2/gone.txt";
    /// <summary>Added by layer 3 of the layered image, contains "three\n".</summary>
    public const string LayeredTopFile = "/opt/layer3.txt";

    /// <summary>The User in the config of the image <see cref="PushNobodyAsync"/> pushes.</summary>
    public const string NobodyUser = "65534:65534";

    private static readonly Lazy<Task<string>> Layout = new(BuildLayoutAsync, LazyThreadSafetyMode.ExecutionAndPublication);
    private static readonly Lazy<Task<string>> NobodyLayout = new(BuildNobodyLayoutAsync, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>The OCI image layout dir (tags "busybox" and "layered"). Read-only for callers; removed at process exit.</summary>
    public static Task<string> LayoutAsync() => Layout.Value;

    /// <summary>Pushes the one-layer busybox image; returns "HOST/NAME:TAG".</summary>
    /// <param name="dockerFormat">Push as Docker schema2 (application/vnd.docker.*) instead of OCI media types.</param>
    public static Task<string> PushBusyboxAsync(TestRegistry reg, string name = "demo/busybox", string tag = "1", bool dockerFormat = false, CancellationToken ct = default) =>
        PushAsync(reg, "busybox", name, tag, dockerFormat, ct);

    /// <summary>Pushes busybox with <see cref="NobodyUser"/> as its config's User (tag <c>nobody</c> of a layout of
    /// its own); returns "HOST/NAME:TAG".</summary>
    public static async Task<string> PushNobodyAsync(TestRegistry reg, string name = "demo/nobody", string tag = "1", CancellationToken ct = default)
    {
        var layout = await NobodyLayout.Value;
        return await PushFromAsync(layout, reg, "nobody", name, tag, dockerFormat: false, ct);
    }

    /// <summary>Pushes the three-layer image with a whiteout (see remarks); returns "HOST/NAME:TAG".</summary>
    public static Task<string> PushLayeredAsync(TestRegistry reg, string name = "demo/layered", string tag = "1", bool dockerFormat = false, CancellationToken ct = default) =>
        PushAsync(reg, "layered", name, tag, dockerFormat, ct);

    private static async Task<string> PushAsync(TestRegistry reg, string layoutTag, string name, string tag, bool dockerFormat, CancellationToken ct) =>
        await PushFromAsync(await LayoutAsync(), reg, layoutTag, name, tag, dockerFormat, ct);

    private static async Task<string> PushFromAsync(string layout, TestRegistry reg, string layoutTag, string name, string tag, bool dockerFormat, CancellationToken ct)
    {
        var reference = $"{reg.Host}/{name}:{tag}";
        var args = new List<string> { "--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false" };
        if (reg.RequiresAuth) { args.Add("--dest-creds"); args.Add($"{reg.Username}:{reg.Password}"); }
        if (dockerFormat) { args.Add("--format"); args.Add("v2s2"); }
        args.Add($"oci:{layout}:{layoutTag}");
        args.Add($"docker://{reference}");
        await ExternalCommand.RunAsync("skopeo", args, ct: ct);
        return reference;
    }

    private static async Task<string> BuildLayoutAsync()
    {
        var work = Directory.CreateTempSubdirectory("br-images-").FullName;
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            try { Directory.Delete(work, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        };
        var layout = Path.Combine(work, "oci");
        var bundle = Path.Combine(work, "bundle");

        await Umoci("init", "--layout", layout);
        await Umoci("new", "--image", $"{layout}:busybox");
        await Umoci("unpack", "--image", $"{layout}:busybox", bundle);
        var rootfs = Path.Combine(bundle, "rootfs");
        var bin = Path.Combine(rootfs, "bin");
        Directory.CreateDirectory(bin);
        File.Copy(BusyboxHostBinary(), Path.Combine(bin, "busybox")); // keeps its 0755 mode
        var applets = await ExternalCommand.RunAsync(BusyboxHostBinary(), ["--list"]);
        foreach (var applet in applets.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            if (applet != "busybox" && !applet.Contains('/'))
                File.CreateSymbolicLink(Path.Combine(bin, applet), "busybox");
        foreach (var dir in new[] { "etc", "tmp", "root", "usr/bin", "usr/sbin", "sbin" })
            Directory.CreateDirectory(Path.Combine(rootfs, dir));
        if (OperatingSystem.IsLinux()) File.SetUnixFileMode(Path.Combine(rootfs, "tmp"), (UnixFileMode)0b1_111_111_111);
        await File.WriteAllTextAsync(Path.Combine(rootfs, "etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n");
        await File.WriteAllTextAsync(Path.Combine(rootfs, "etc/group"), "root:x:0:\nnogroup:x:65534:\n");
        await Umoci("repack", "--image", $"{layout}:busybox", bundle);
        await Umoci("config", "--image", $"{layout}:busybox", "--config.cmd", "/bin/sh",
            "--config.env", "PATH=/usr/sbin:/usr/bin:/sbin:/bin");
        Directory.Delete(bundle, recursive: true);

        // Layer 2 adds two files; layer 3 deletes one of them, which umoci records as a ".wh." whiteout.
        await Umoci("unpack", "--image", $"{layout}:busybox", bundle);
        Directory.CreateDirectory(Path.Combine(bundle, "rootfs/opt/layer2"));
        await File.WriteAllTextAsync(Path.Combine(bundle, "rootfs" + LayeredKeptFile), "keep\n");
        await File.WriteAllTextAsync(Path.Combine(bundle, "rootfs" + LayeredDeletedFile), "gone\n");
        await Umoci("repack", "--image", $"{layout}:layered-2", bundle);
        Directory.Delete(bundle, recursive: true);
        await Umoci("unpack", "--image", $"{layout}:layered-2", bundle);
        File.Delete(Path.Combine(bundle, "rootfs" + LayeredDeletedFile));
        await File.WriteAllTextAsync(Path.Combine(bundle, "rootfs" + LayeredTopFile), "three\n");
        await Umoci("repack", "--image", $"{layout}:layered", bundle);
        Directory.Delete(bundle, recursive: true);
        await Umoci("rm", "--image", $"{layout}:layered-2");
        await Umoci("gc", "--layout", layout);
        return layout;

        static Task<string> Umoci(params string[] args) => ExternalCommand.RunAsync("umoci", args);
    }

    /// <summary>A copy of the shared layout's busybox image whose config names <see cref="NobodyUser"/>: same layer, new config.</summary>
    private static async Task<string> BuildNobodyLayoutAsync()
    {
        var shared = await LayoutAsync();
        var work = Directory.CreateTempSubdirectory("br-images-nobody-").FullName;
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            try { Directory.Delete(work, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        };
        var layout = Path.Combine(work, "oci");
        await ExternalCommand.RunAsync("cp", ["-a", shared, layout]);
        await ExternalCommand.RunAsync("umoci", ["config", "--image", $"{layout}:busybox", "--tag", "nobody", "--config.user", NobodyUser]);
        return layout;
    }

    private static string BusyboxHostBinary()
    {
        // busybox-static installs /bin/busybox; a dynamic busybox would not run inside a bare image.
        foreach (var p in new[] { "/bin/busybox", "/usr/bin/busybox" })
            if (File.Exists(p)) return p;
        throw new FileNotFoundException("busybox not found: apt-get install busybox-static");
    }
}

/// <summary>Runs an external program and throws with its stderr when it exits non-zero.</summary>
public static class ExternalCommand
{
    public static async Task<string> RunAsync(string file, IEnumerable<string> args, string? workDir = null, TimeSpan? timeout = null, CancellationToken ct = default)
    {
        var psi = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = workDir ?? "",
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {file}");
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        cts.CancelAfter(timeout ?? TimeSpan.FromMinutes(2));
        var stdout = p.StandardOutput.ReadToEndAsync(cts.Token);
        var stderr = p.StandardError.ReadToEndAsync(cts.Token);
        try
        {
            await p.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            try { p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
            if (ct.IsCancellationRequested) throw;
            throw new TimeoutException($"{file} {Describe(psi.ArgumentList)} did not finish in time");
        }
        var output = await stdout;
        var error = await stderr;
        if (p.ExitCode != 0)
            throw new InvalidOperationException($"{file} {Describe(psi.ArgumentList)} exited with {p.ExitCode}: {error.Trim()}");
        return output;
    }

    // Hides credential arguments (skopeo --dest-creds user:pass) in error messages.
    private static string Describe(IEnumerable<string> args)
    {
        var sb = new StringBuilder();
        var hideNext = false;
        foreach (var a in args)
        {
            sb.Append(sb.Length > 0 ? " " : "").Append(hideNext ? "***" : a);
            hideNext = a is "--dest-creds" or "--src-creds" or "--creds";
        }
        return sb.ToString();
    }
}
