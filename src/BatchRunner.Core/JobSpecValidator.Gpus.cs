namespace BatchRunner.Core;

public static partial class JobSpecValidator
{
    // Only the shape is checked here (pure logic); whether any live node has that many GPUs of that model is
    // the API's admission check, which knows the nodes.
    static partial void ValidateGpus(JobSubmission s, Action<string, string> add, ref JobSpec spec)
    {
        if (s.Resources is not { } r) return;
        var gpus = 0;
        if (r.Gpus is { } n)
        {
            if (n < 0) add("resources.gpus", "gpus must be 0 or a positive integer");
            else if (n > GpuLimits.MaxGpusPerJob) add("resources.gpus", $"gpus must be at most {GpuLimits.MaxGpusPerJob}");
            else gpus = n;
        }
        string? model = null;
        if (r.GpuModel is { } m)
        {
            if (string.IsNullOrWhiteSpace(m) || m.Length > GpuLimits.MaxGpuModelLength || m.Any(char.IsControl))
                add("resources.gpuModel", $"gpuModel must be 1-{GpuLimits.MaxGpuModelLength} printable characters (part of a model name, e.g. \"H100\")");
            else if (r.Gpus is null or 0)
                add("resources.gpuModel", "gpuModel needs resources.gpus of at least 1");
            else model = m.Trim();
        }
        spec = spec with { Resources = spec.Resources with { Gpus = gpus, GpuModel = model } };
    }
}
