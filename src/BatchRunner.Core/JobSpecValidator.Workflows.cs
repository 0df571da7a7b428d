namespace BatchRunner.Core;

public static partial class JobSpecValidator
{
    public const int MaxDependencies = 100;
    public const int MaxInputsFrom = 32;

    // That the named jobs exist (and are the caller's) is checked by the server; here only the shape.
    static partial void ValidateWorkflows(JobSubmission s, Action<string, string> add, ref JobSpec spec)
    {
        if (s.Array is { } a)
        {
            var size = a.Size ?? 0;
            if (a.Size is null) add("array.size", "array.size is required");
            else if (size is < 1 or > ArraySpec.MaxSize) add("array.size", $"array.size must be between 1 and {ArraySpec.MaxSize}");
            var parallelism = a.Parallelism ?? size;
            if (a.Parallelism is < 1) add("array.parallelism", "array.parallelism must be at least 1");
            spec = spec with { Array = new ArraySpec(size, Math.Clamp(parallelism, 1, Math.Max(1, size))) };
        }

        var dependencies = new List<JobDependency>();
        var list = s.DependsOn ?? [];
        if (list.Count > MaxDependencies) add("dependsOn", $"at most {MaxDependencies} dependencies");
        for (var i = 0; i < list.Count; i++)
        {
            var d = list[i];
            if (d is null) { add($"dependsOn[{i}]", "a dependency is an object {\"job\": ID, \"condition\": ...}"); continue; }
            var condition = d.Condition ?? DependencyCondition.Succeeded;
            if (!DependencyCondition.All.Contains(condition))
                add($"dependsOn[{i}].condition", $"condition must be one of {string.Join(", ", DependencyCondition.All)}");
            if (!Guid.TryParse(d.Job, out var job)) add($"dependsOn[{i}].job", $"\"{d.Job}\" is not a job id");
            else if (dependencies.Any(x => x.Job == job)) add($"dependsOn[{i}].job", $"job {job} is named twice");
            else dependencies.Add(new JobDependency(job, condition));
        }

        var inputs = new List<InputsFrom>();
        var from = s.InputsFrom ?? [];
        if (from.Count > MaxInputsFrom) add("inputsFrom", $"at most {MaxInputsFrom} entries");
        for (var i = 0; i < from.Count; i++)
        {
            var f = from[i];
            if (f is null) { add($"inputsFrom[{i}]", "an entry is an object {\"job\": ID, \"path\": ...}"); continue; }
            if (!Guid.TryParse(f.Job, out var job)) { add($"inputsFrom[{i}].job", $"\"{f.Job}\" is not a job id"); continue; }
            if (inputs.Any(x => x.Job == job)) { add($"inputsFrom[{i}].job", $"job {job} is named twice"); continue; }
            var path = f.Path?.Trim('/');
            if (f.Path is not null && (path!.Length == 0 || path.Contains('\0') || path.Split('/').Any(p => p is "" or "." or "..")))
                add($"inputsFrom[{i}].path", "path must be a relative directory within the job's outputs, without \".\" or \"..\" parts");
            inputs.Add(new InputsFrom(job, string.IsNullOrEmpty(path) ? null : path));
        }
        // Mounted outputs must exist: a job reading another's outputs waits for it to succeed, unless it names that
        // job in dependsOn itself (with another condition).
        foreach (var input in inputs)
            if (!dependencies.Any(d => d.Job == input.Job)) dependencies.Add(new JobDependency(input.Job, DependencyCondition.Succeeded));

        spec = spec with { DependsOn = dependencies, InputsFrom = inputs };
    }
}
