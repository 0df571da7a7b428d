using System.Collections.Concurrent;
using System.Runtime.InteropServices;

namespace BatchRunner.Runtime.Gpus;

/// <summary>
/// GPU metrics through NVML (libnvidia-ml.so.1, loaded at run time: a node without the driver simply has no
/// NVML source). Cheap enough to sample every second. Dispose calls nvmlShutdown.
/// </summary>
public sealed unsafe class NvmlMetricsSource : IGpuMetricsSource, IDisposable
{
    public const string LibraryName = "libnvidia-ml.so.1";
    private const int NVML_SUCCESS = 0;
    private const int NVML_TEMPERATURE_GPU = 0;

    [StructLayout(LayoutKind.Sequential)]
    private struct Utilization { public uint Gpu; public uint Memory; }

    [StructLayout(LayoutKind.Sequential)]
    private struct Memory { public ulong Total; public ulong Free; public ulong Used; }

    private readonly nint _lib;
    private readonly delegate* unmanaged<int> _shutdown;
    private readonly delegate* unmanaged<uint*, int> _getCount;
    private readonly delegate* unmanaged<uint, nint*, int> _byIndex;
    private readonly delegate* unmanaged<byte*, nint*, int> _byUuid;
    private readonly delegate* unmanaged<nint, byte*, uint, int> _getUuid;
    private readonly delegate* unmanaged<nint, Utilization*, int> _utilization;
    private readonly delegate* unmanaged<nint, Memory*, int> _memory;
    private readonly delegate* unmanaged<nint, int, uint*, int> _temperature;
    private readonly delegate* unmanaged<nint, uint*, int> _power;
    private readonly delegate* unmanaged<int, byte*> _errorString;
    private readonly ConcurrentDictionary<string, nint> _handles = new(StringComparer.Ordinal);
    private readonly TimeProvider _time;
    private int _disposed;

    private NvmlMetricsSource(nint lib, TimeProvider time)
    {
        _lib = lib;
        _time = time;
        nint Sym(string name) => NativeLibrary.GetExport(lib, name);
        var init = (delegate* unmanaged<int>)Sym("nvmlInit_v2");
        _shutdown = (delegate* unmanaged<int>)Sym("nvmlShutdown");
        _getCount = (delegate* unmanaged<uint*, int>)Sym("nvmlDeviceGetCount_v2");
        _byIndex = (delegate* unmanaged<uint, nint*, int>)Sym("nvmlDeviceGetHandleByIndex_v2");
        _byUuid = (delegate* unmanaged<byte*, nint*, int>)Sym("nvmlDeviceGetHandleByUUID");
        _getUuid = (delegate* unmanaged<nint, byte*, uint, int>)Sym("nvmlDeviceGetUUID");
        _utilization = (delegate* unmanaged<nint, Utilization*, int>)Sym("nvmlDeviceGetUtilizationRates");
        _memory = (delegate* unmanaged<nint, Memory*, int>)Sym("nvmlDeviceGetMemoryInfo");
        _temperature = (delegate* unmanaged<nint, int, uint*, int>)Sym("nvmlDeviceGetTemperature");
        _power = (delegate* unmanaged<nint, uint*, int>)Sym("nvmlDeviceGetPowerUsage");
        _errorString = (delegate* unmanaged<int, byte*>)Sym("nvmlErrorString");
        Check(init(), "nvmlInit_v2");
    }

    public string Name => "nvml";

    /// <summary>Loads and initialises NVML; null with the reason when the library is absent or init fails.</summary>
    public static NvmlMetricsSource? TryCreate(out string? error, string library = LibraryName, TimeProvider? time = null)
    {
        error = null;
        if (!NativeLibrary.TryLoad(library, out var lib))
        {
            error = $"{library} could not be loaded (no NVIDIA driver on this node?)";
            return null;
        }
        try { return new NvmlMetricsSource(lib, time ?? TimeProvider.System); }
        catch (Exception e) when (e is EntryPointNotFoundException or InvalidOperationException)
        {
            NativeLibrary.Free(lib);
            error = e.Message;
            return null;
        }
    }

    /// <summary>UUIDs of every GPU NVML sees, in NVML index order.</summary>
    public IReadOnlyList<string> DeviceUuids()
    {
        uint count;
        Check(_getCount(&count), "nvmlDeviceGetCount_v2");
        var list = new List<string>();
        var buf = stackalloc byte[96];
        for (uint i = 0; i < count; i++)
        {
            nint h;
            if (_byIndex(i, &h) != NVML_SUCCESS) continue;
            if (_getUuid(h, buf, 96) != NVML_SUCCESS) continue;
            var uuid = Marshal.PtrToStringUTF8((nint)buf)!;
            _handles[uuid] = h;
            list.Add(uuid);
        }
        return list;
    }

    public Task<IReadOnlyList<GpuSample>> SampleAsync(IReadOnlyCollection<string>? uuids, CancellationToken ct)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        var at = _time.GetUtcNow();
        var list = new List<GpuSample>();
        foreach (var uuid in uuids ?? DeviceUuids())
        {
            ct.ThrowIfCancellationRequested();
            if (Handle(uuid) is not { } h) continue;
            Utilization u;
            Memory m;
            uint temp, mw;
            list.Add(new GpuSample(uuid,
                _utilization(h, &u) == NVML_SUCCESS ? u.Gpu : null,
                _memory(h, &m) == NVML_SUCCESS ? (long)m.Used : null,
                _memory(h, &m) == NVML_SUCCESS ? (long)m.Total : null,
                _temperature(h, NVML_TEMPERATURE_GPU, &temp) == NVML_SUCCESS ? temp : null,
                _power(h, &mw) == NVML_SUCCESS ? mw / 1000.0 : null,
                at));
        }
        return Task.FromResult<IReadOnlyList<GpuSample>>(list);
    }

    private nint? Handle(string uuid)
    {
        if (_handles.TryGetValue(uuid, out var h)) return h;
        var bytes = System.Text.Encoding.UTF8.GetBytes(uuid + "\0");
        fixed (byte* p = bytes)
        {
            if (_byUuid(p, &h) != NVML_SUCCESS) return null;
        }
        return _handles[uuid] = h;
    }

    private void Check(int rc, string call)
    {
        if (rc == NVML_SUCCESS) return;
        var text = _errorString is null ? null : Marshal.PtrToStringUTF8((nint)_errorString(rc));
        throw new InvalidOperationException($"{call} failed: {text ?? "error"} ({rc})");
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _shutdown();
        NativeLibrary.Free(_lib);
    }
}
