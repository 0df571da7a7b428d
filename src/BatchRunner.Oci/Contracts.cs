// The narrow surface of BatchRunner.Oci that the server uses. Implementations live beside this file.
namespace BatchRunner.Oci;

/// <summary>Credentials for one registry host ("127.0.0.1:5000", "docker.io", "ghcr.io"). Never logged.</summary>
public sealed record RegistryCredential(string Registry, string? Username = null, string? Password = null, string? IdentityToken = null)
{
    public override string ToString() => $"RegistryCredential {{ Registry = {Registry}, Username = {Username}, Password = *** }}";
}

/// <summary>
/// Where the registry client gets credentials it does not have in <see cref="ImageStoreOptions.Credentials"/>
/// (a Docker config with credential helpers). Asked whenever a request needs credentials, so a source may return
/// different ones over time (tokens expire); a source that runs programs should cache briefly.
/// </summary>
public interface IRegistryCredentialSource
{
    /// <param name="registry">The registry host as in image references ("127.0.0.1:5000", "docker.io").</param>
    /// <returns>The credential, or null to pull anonymously.</returns>
    /// <exception cref="RegistryCredentialException">The source could not tell (a helper is missing, failed or hung).</exception>
    ValueTask<RegistryCredential?> GetAsync(string registry, CancellationToken ct);

    /// <summary>The registry refused what <see cref="GetAsync"/> returned: drop any cached copy so that the next
    /// call fetches it afresh.</summary>
    void Invalidate(string registry);
}

/// <summary>A credential source failed. The message names the source and registry, never a secret.</summary>
public sealed class RegistryCredentialException(string message, Exception? inner = null, bool transient = false) : Exception(message, inner)
{
    /// <summary>True when asking again may work (a helper timed out).</summary>
    public bool Transient { get; } = transient;
}

public sealed class ImageStoreOptions
{
    /// <summary>Root of the digest-addressed content store and unpacked layers (e.g. DATA/images).</summary>
    public required string Root { get; init; }
    /// <summary>Explicit credentials; for a registry listed here <see cref="CredentialSource"/> is not asked.</summary>
    public IReadOnlyList<RegistryCredential> Credentials { get; init; } = [];
    /// <summary>Asked for registries without an entry in <see cref="Credentials"/> (e.g. <see cref="Registry.DockerConfigCredentialSource"/>).</summary>
    public IRegistryCredentialSource? CredentialSource { get; init; }
    /// <summary>Registries reached over plain HTTP. Loopback registries always are, as Docker does.</summary>
    public IReadOnlyList<string> InsecureRegistries { get; init; } = [];
    /// <summary>Which registries pulls may contact (and the redirect and token hosts they send pulls to); default: any
    /// host except loopback, link-local and cloud metadata addresses. Imports never contact a registry.</summary>
    public Registry.RegistryPolicy RegistryPolicy { get; init; } = Registry.RegistryPolicy.PublicHosts;
    public int MaxParallelDownloads { get; init; } = 4;
    /// <summary>Layers unpacked at once (each on two threads: inflating and hashing, writing the files); the layers of
    /// one image unpack in parallel, and a layer downloading is unpacked as its bytes arrive.</summary>
    public int MaxParallelUnpacks { get; init; } = 4;
    /// <summary>Asked before a pull or import writes anything (and before it unpacks), with about how many bytes it will
    /// write: the blobs it must download plus <see cref="UnpackedSizeFactor"/> times the compressed size of the layers it
    /// must unpack. Returns why there is not room for that (the pull or import fails with it), or null to go on.</summary>
    public Func<long, string?>? SpaceCheck { get; init; }
    /// <summary>How much larger an unpacked layer is assumed to be than its compressed blob, for <see cref="SpaceCheck"/>.</summary>
    public const int UnpackedSizeFactor = 3;
    /// <summary>OS/architecture to pick from an image index (defaults to this node's).</summary>
    public string Os { get; init; } = "linux";
    public string Architecture { get; init; } = RuntimeArchitecture();

    public static string RuntimeArchitecture() => System.Runtime.InteropServices.RuntimeInformation.OSArchitecture switch
    {
        System.Runtime.InteropServices.Architecture.X64 => "amd64",
        System.Runtime.InteropServices.Architecture.Arm64 => "arm64",
        System.Runtime.InteropServices.Architecture.Arm => "arm",
        System.Runtime.InteropServices.Architecture.S390x => "s390x",
        System.Runtime.InteropServices.Architecture.Ppc64le => "ppc64le",
        var a => a.ToString().ToLowerInvariant(),
    };
}

/// <summary>The parts of an image's config that decide how its container runs.</summary>
public sealed record ImageConfig(
    IReadOnlyList<string> Env,
    IReadOnlyList<string>? Entrypoint,
    IReadOnlyList<string>? Cmd,
    string? WorkingDir,
    string? User)
{
    /// <summary>The signal that asks the image's process to stop, as its config names it ("SIGINT"); null: SIGTERM.</summary>
    public string? StopSignal { get; init; }
}

/// <summary>An image that is fully present on disk: every layer downloaded, verified and unpacked.</summary>
/// <param name="ManifestDigest">Digest of the (platform) manifest: what <c>imageDigest</c> reports.</param>
/// <param name="LayerPaths">Unpacked layer directories, bottom layer first. Shared by all jobs: read-only.</param>
public sealed record PreparedImage(
    ImageReference Reference,
    string ManifestDigest,
    ImageConfig Config,
    IReadOnlyList<string> LayerPaths,
    long SizeBytes);

/// <summary>When to contact the registry (Kubernetes' imagePullPolicy).</summary>
public enum PullPolicy
{
    /// <summary>Use the locally resolved image when the reference was pulled before; otherwise pull.</summary>
    IfNotPresent,
    /// <summary>Always re-resolve the tag at the registry (blobs already present are not downloaded again).</summary>
    Always,
    /// <summary>Never contact the registry; fail when the image is not present.</summary>
    Never,
}

public sealed record PullProgress(long BytesDone, long BytesTotal);

/// <summary>
/// A pull failed in a way the user should read: the message names the image and what the registry
/// said ("image 127.0.0.1:5000/demo/busybox:nope: manifest unknown (HTTP 404)").
/// </summary>
public sealed class ImagePullException(string message, Exception? inner = null, bool transient = false) : Exception(message, inner)
{
    /// <summary>True for failures that may pass on retry (5xx, dropped connection), false for 4xx, bad digests.</summary>
    public bool Transient { get; } = transient;
}

/// <summary>
/// Pulls images into the digest-addressed store and unpacks their layers once each.
/// Safe to call concurrently; a second pull of a present image downloads nothing.
/// </summary>
public interface IImageStore
{
    Task<PreparedImage> PullAsync(ImageReference reference, PullPolicy policy, IProgress<PullProgress>? progress, CancellationToken ct);
}

/// <summary>
/// Stacks unpacked layers into a writable root filesystem (with overlayfs: <see cref="Snapshots.OverlaySnapshotter"/>).
/// The returned root owns what the snapshotter created for it: disposing it removes them.
/// </summary>
public interface ISnapshotter
{
    /// <param name="lowerDirs">Bottom layer first (the order of <see cref="PreparedImage.LayerPaths"/>).</param>
    /// <param name="workDir">An empty directory owned by the caller; the snapshotter creates its directories (rootfs/, ...) in it.</param>
    /// <param name="scratchDiscarded">The caller discards <paramref name="workDir"/>'s whole filesystem once the root is released
    /// (a job's own disk, emptied or deleted as one): the root's writes need not reach that filesystem durably, and
    /// releasing it only unmounts it, leaving its directories and what the container wrote to that discard.</param>
    Task<IRootfs> MountAsync(IReadOnlyList<string> lowerDirs, string workDir, bool scratchDiscarded, CancellationToken ct);
}

/// <summary>
/// A writable root filesystem for one container. Disposing it unmounts it and removes the directories its
/// snapshotter made (never the caller's work directory; none when the caller discards them itself); dispose is
/// idempotent and may be retried after it failed.
/// </summary>
public interface IRootfs : IAsyncDisposable
{
    /// <summary>The directory to give the runtime as the container's root.</summary>
    string RootfsPath { get; }
}
