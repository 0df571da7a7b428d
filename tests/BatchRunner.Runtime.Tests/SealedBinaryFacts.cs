using BatchRunner.Native;
using Microsoft.Extensions.Logging.Abstractions;

namespace BatchRunner.Runtime.Tests;

/// <summary>
/// The sealed in-memory copy of runc's binary that containers start from (RuncLaunchFacts shows them doing so): nothing
/// can write it, it follows the file when a package replaces it, and a program that cannot run from such a copy runs
/// from its file.
/// </summary>
public sealed class SealedBinaryFacts : IAsyncLifetime
{
    private const string Runc = "/usr/sbin/runc";
    private readonly RuncFixture _fx = new();

    private static SealedBinary Sealed(string path) => new(path, NullLogger.Instance, TimeSpan.FromSeconds(30));

    private string CopyOfRunc(string name)
    {
        var path = Path.Combine(_fx.BaseDir, name);
        Directory.CreateDirectory(_fx.BaseDir);
        File.Copy(Runc, path, overwrite: true);
        File.SetUnixFileMode(path, (UnixFileMode)0b111_101_101);
        return path;
    }

    private static int Fd(string procPath) => int.Parse(Path.GetFileName(procPath));

    [Fact]
    public async Task PathAsync_IsACopyOfTheBinary_ThatNoOneCanWrite()
    {
        var binary = CopyOfRunc("runc-sealed");
        var sealedBinary = Sealed(binary); // held to the end: its copy's descriptor closes with it
        var path = await sealedBinary.PathAsync(CancellationToken.None);

        Assert.StartsWith("/proc/self/fd/", path);
        Assert.Equal(Libc.ImmutableSeals, Libc.Seals(Fd(path)));
        Assert.Equal(File.ReadAllBytes(binary), File.ReadAllBytes(path));
        // Not even root may write to it, nor make it writable again.
        using (var w = File.OpenHandle(path, FileMode.Open, FileAccess.Write))
        {
            // Only ever tried on the sealed copy itself: a descriptor number that had been closed and reused would be
            // someone else's file (this test once wrote into a framework assembly that way).
            Assert.Equal(Libc.ImmutableSeals, Libc.Seals((int)w.DangerousGetHandle()));
            Assert.Throws<UnauthorizedAccessException>(() => RandomAccess.Write(w, "\0"u8, 0)); // EPERM
        }
        Assert.Equal(File.ReadAllBytes(binary), File.ReadAllBytes(path));
        Assert.NotEqual(0, Libc.fcntl(Fd(path), Libc.F_ADD_SEALS, 0));
        GC.KeepAlive(sealedBinary);
    }

    [Fact]
    public async Task PathAsync_CopiesAgain_OnlyWhenTheBinaryWasReplaced()
    {
        var binary = CopyOfRunc("runc-replaced");
        var sealedBinary = Sealed(binary);
        var first = await sealedBinary.PathAsync(CancellationToken.None);
        Assert.Equal(first, await sealedBinary.PathAsync(CancellationToken.None));
        Assert.Equal(1, sealedBinary.Copies);

        // What a package upgrade does: a new file renamed over the old one.
        var next = CopyOfRunc("runc-replaced.new");
        File.AppendAllText(next, "\n"); // a different binary (ELF ignores what follows its sections)
        File.Move(next, binary, overwrite: true);
        var second = await sealedBinary.PathAsync(CancellationToken.None);

        Assert.NotEqual(first, second);
        Assert.Equal(2, sealedBinary.Copies);
        Assert.Equal(File.ReadAllBytes(binary), File.ReadAllBytes(second));
        Assert.Equal(Libc.ImmutableSeals, Libc.Seals(Fd(first))); // the superseded copy stays open for a start that holds it
        GC.KeepAlive(sealedBinary);
    }

    [Fact]
    public async Task PathAsync_IsTheFileItself_ForAScript()
    {
        var wrapper = _fx.RuncWrapper("runc-script", "true");
        var sealedBinary = Sealed(wrapper);

        Assert.Equal(wrapper, await sealedBinary.PathAsync(CancellationToken.None));
        Assert.Equal(0, sealedBinary.Copies);
    }

    public Task InitializeAsync() => _fx.InitializeAsync();

    public Task DisposeAsync() => _fx.DisposeAsync();
}
