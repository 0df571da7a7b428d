namespace BatchRunner.Oci.Store;

/// <summary>
/// The digests that pulls and imports in progress are about to use or have just written, which garbage collection
/// must not remove, and a version that moves whenever an image record is written.
/// </summary>
/// <remarks>
/// The protocol that makes a concurrent pull and GC safe: a pull pins a digest <em>before</em> it checks whether the
/// blob or layer exists or writes it, and unpins only after the image's record is written (which bumps
/// <see cref="RecordsVersion"/>). GC removes an item only inside <see cref="TryRemove"/>, which runs under the same
/// lock and refuses when the digest is pinned or a record was written since GC computed what the records reference.
/// So either GC removed the item before the pin (the pull then sees it absent and fetches it again) or GC sees
/// the pin or the new record and keeps it.
/// </remarks>
internal sealed class ContentPins
{
    private readonly object _lock = new();
    private readonly Dictionary<string, int> _counts = new(StringComparer.Ordinal);
    private long _recordsVersion;

    public enum RemoveOutcome { Removed, Pinned, RecordsChanged }

    public long RecordsVersion { get { lock (_lock) return _recordsVersion; } }

    public void RecordsChanged() { lock (_lock) _recordsVersion++; }

    public bool IsPinned(string digest) { lock (_lock) return _counts.ContainsKey(digest); }

    public Lease Acquire() => new(this);

    /// <summary>Runs <paramref name="remove"/> (keep it short: it holds the lock pulls pin under) unless the digest is pinned or records changed.</summary>
    public RemoveOutcome TryRemove(string digest, long recordsVersion, Action remove)
    {
        lock (_lock)
        {
            if (_recordsVersion != recordsVersion) return RemoveOutcome.RecordsChanged;
            if (_counts.ContainsKey(digest)) return RemoveOutcome.Pinned;
            remove();
            return RemoveOutcome.Removed;
        }
    }

    /// <summary>The pins of one pull or import; disposing releases them all.</summary>
    public sealed class Lease(ContentPins owner) : IDisposable
    {
        private readonly HashSet<string> _held = new(StringComparer.Ordinal);

        public void Pin(string digest)
        {
            lock (owner._lock)
            {
                if (!_held.Add(digest)) return;
                owner._counts[digest] = owner._counts.GetValueOrDefault(digest) + 1;
            }
        }

        public void Dispose()
        {
            lock (owner._lock)
            {
                foreach (var d in _held)
                {
                    var n = owner._counts[d] - 1;
                    if (n == 0) owner._counts.Remove(d);
                    else owner._counts[d] = n;
                }
                _held.Clear();
            }
        }
    }
}
