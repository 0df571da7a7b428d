namespace BatchRunner.Runtime.Tests;

public sealed class UserResolverFacts : IDisposable
{
    private readonly string _rootfs = Directory.CreateDirectory(Path.Combine(Path.GetTempPath(), "br-user-" + Guid.NewGuid().ToString("N"), "rootfs")).FullName;
    private readonly string _outside;

    public UserResolverFacts()
    {
        _outside = Directory.CreateDirectory(Path.Combine(Path.GetDirectoryName(_rootfs)!, "host-etc")).FullName;
        Directory.CreateDirectory(Path.Combine(_rootfs, "etc"));
    }

    public void Dispose() => Directory.Delete(Path.GetDirectoryName(_rootfs)!, recursive: true);

    private void WriteEtc(string passwd, string group)
    {
        File.WriteAllText(Path.Combine(_rootfs, "etc", "passwd"), passwd);
        File.WriteAllText(Path.Combine(_rootfs, "etc", "group"), group);
    }

    private void WriteDefaultEtc() => WriteEtc(
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:App:/home/app:/bin/sh\nnobody:x:65534:65534::/nonexistent:/bin/false\n",
        "root:x:0:\napp:x:1001:\ndocker:x:998:app,other\nvideo:x:44:app\nnogroup:x:65534:\n");

    [Theory]
    [InlineData(null)]
    [InlineData("")]
    public void Resolve_ReturnsRoot_WhenUserIsEmpty(string? user)
    {
        WriteDefaultEtc();
        Assert.Equal(new ResolvedUser(0, 0, []), UserResolver.Resolve(_rootfs, user), ResolvedUserComparer.Instance);
    }

    [Fact]
    public void Resolve_UsesPasswdGidAndGroups_WhenNumericUidIsListed()
    {
        WriteDefaultEtc();
        var u = UserResolver.Resolve(_rootfs, "1000");
        Assert.Equal((1000u, 1001u), (u.Uid, u.Gid));
        Assert.Equal([998u, 44u], u.AdditionalGids);
    }

    [Fact]
    public void Resolve_UsesGidZero_WhenNumericUidIsNotListed()
    {
        WriteDefaultEtc();
        var u = UserResolver.Resolve(_rootfs, "4242");
        Assert.Equal((4242u, 0u), (u.Uid, u.Gid));
        Assert.Empty(u.AdditionalGids);
    }

    [Fact]
    public void Resolve_UsesGidZero_WhenImageHasNoPasswd() =>
        Assert.Equal(0u, UserResolver.Resolve(_rootfs, "1000").Gid);

    [Fact]
    public void Resolve_TakesBothNumbers_WhenUidAndGidAreNumeric()
    {
        WriteDefaultEtc();
        var u = UserResolver.Resolve(_rootfs, "1000:1000");
        Assert.Equal((1000u, 1000u), (u.Uid, u.Gid));
        Assert.Empty(u.AdditionalGids);
    }

    [Fact]
    public void Resolve_LooksUpNameAndGroup()
    {
        WriteDefaultEtc();
        var byName = UserResolver.Resolve(_rootfs, "app");
        Assert.Equal((1000u, 1001u), (byName.Uid, byName.Gid));
        var nameGroup = UserResolver.Resolve(_rootfs, "app:docker");
        Assert.Equal((1000u, 998u), (nameGroup.Uid, nameGroup.Gid));
        var uidGroup = UserResolver.Resolve(_rootfs, "65534:video");
        Assert.Equal((65534u, 44u), (uidGroup.Uid, uidGroup.Gid));
    }

    [Fact]
    public void Resolve_Throws_WhenNameIsUnknown()
    {
        WriteDefaultEtc();
        var e = Assert.Throws<UserResolutionException>(() => UserResolver.Resolve(_rootfs, "x"));
        Assert.Equal("user \"x\" not found in the image's /etc/passwd", e.Message);
        var g = Assert.Throws<UserResolutionException>(() => UserResolver.Resolve(_rootfs, "app:nogroup-here"));
        Assert.Contains("group \"nogroup-here\" not found", g.Message);
    }

    [Fact]
    public void Resolve_StaysInRootfs_WhenPasswdIsAbsoluteSymlinkToHostFile()
    {
        // Host /etc/shadow stand-in: a file outside the rootfs at the path the link names.
        File.WriteAllText(Path.Combine(_outside, "shadow"), "root:SECRET-HASH:0:0:::/:/bin/sh\nx:x:7:7::/:/bin/sh\n");
        File.CreateSymbolicLink(Path.Combine(_rootfs, "etc", "passwd"), Path.Combine(_outside, "shadow"));
        var e = Assert.Throws<UserResolutionException>(() => UserResolver.Resolve(_rootfs, "x"));
        Assert.Contains("not found", e.Message);
        Assert.Null(UserResolver.ReadConfined(_rootfs, "/etc/passwd"));
    }

    [Fact]
    public void Resolve_ReadsNothingOutside_WhenPasswdIsSymlinkToRealHostShadow()
    {
        File.CreateSymbolicLink(Path.Combine(_rootfs, "etc", "passwd"), "/etc/shadow");
        Assert.Null(UserResolver.ReadConfined(_rootfs, "/etc/passwd")); // rootfs has no etc/shadow
        Assert.Throws<UserResolutionException>(() => UserResolver.Resolve(_rootfs, "root"));
        Assert.Equal(0u, UserResolver.Resolve(_rootfs, "0").Gid);
    }

    [Fact]
    public void Resolve_StaysInRootfs_WhenRelativeSymlinkClimbsOut()
    {
        File.WriteAllText(Path.Combine(_outside, "passwd"), "evil:x:0:0::/:/bin/sh\n");
        File.CreateSymbolicLink(Path.Combine(_rootfs, "etc", "passwd"), "../../../../../../host-etc/passwd");
        Assert.Throws<UserResolutionException>(() => UserResolver.Resolve(_rootfs, "evil"));
    }

    [Fact]
    public void Resolve_FollowsSymlinks_WithinRootfs()
    {
        Directory.CreateDirectory(Path.Combine(_rootfs, "usr", "etc"));
        File.WriteAllText(Path.Combine(_rootfs, "usr", "etc", "passwd"), "svc:x:500:500::/:/bin/sh\n");
        File.CreateSymbolicLink(Path.Combine(_rootfs, "etc", "passwd"), "/usr/etc/passwd");
        Assert.Equal(500u, UserResolver.Resolve(_rootfs, "svc").Uid);
    }

    [Fact]
    public void Resolve_Refuses_WhenPasswdIsNotARegularFile()
    {
        var fifo = Path.Combine(_rootfs, "etc", "passwd");
        using (var p = System.Diagnostics.Process.Start("mkfifo", fifo)) p.WaitForExit();
        // A FIFO would block a naive reader forever; it must be refused at once.
        var e = Assert.Throws<UserResolutionException>(() => UserResolver.Resolve(_rootfs, "app"));
        Assert.Contains("not a regular file", e.Message);
    }

    private sealed class ResolvedUserComparer : IEqualityComparer<ResolvedUser>
    {
        public static readonly ResolvedUserComparer Instance = new();
        public bool Equals(ResolvedUser? a, ResolvedUser? b) =>
            a is not null && b is not null && a.Uid == b.Uid && a.Gid == b.Gid && a.AdditionalGids.SequenceEqual(b.AdditionalGids);
        public int GetHashCode(ResolvedUser u) => HashCode.Combine(u.Uid, u.Gid);
    }
}
