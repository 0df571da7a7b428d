using System.Text.Json;
using System.Text.RegularExpressions;

namespace BatchRunner.Core;

/// <summary>
/// Turns a <see cref="JobSubmission"/> into a <see cref="JobSpec"/>, or names every field that is wrong.
/// Pure logic: the image reference grammar is checked by the caller (it belongs to the image layer).
/// </summary>
public static partial class JobSpecValidator
{
    public const int MaxNameLength = 200;
    public const int MaxArgs = 4096;
    public const int MaxEnv = 1024;
    public const int MaxLabels = 64;

    [GeneratedRegex("^[A-Za-z_][A-Za-z0-9_]*$")]
    private static partial Regex EnvName();

    [GeneratedRegex("^[a-z0-9]([a-z0-9_-]{0,62})$")]
    private static partial Regex QueueName();

    [GeneratedRegex(@"^[A-Za-z0-9]([A-Za-z0-9_./-]{0,126}[A-Za-z0-9])?$")]
    private static partial Regex LabelKey();

    public static ValidationResult Validate(JobSubmission? s)
    {
        var errors = new Dictionary<string, List<string>>();
        void Add(string field, string message)
        {
            if (!errors.TryGetValue(field, out var list)) errors[field] = list = [];
            list.Add(message);
        }

        if (s is null)
        {
            Add("body", "a JSON object with at least \"image\" is required");
            return ValidationResult.Invalid(errors);
        }

        if (string.IsNullOrWhiteSpace(s.Image)) Add("image", "image is required");

        if (s.Name is { } name && (name.Length > MaxNameLength || name.Any(char.IsControl)))
            Add("name", $"name must be at most {MaxNameLength} printable characters");

        if (s.Command is { } cmd)
        {
            if (cmd.Count == 0) Add("command", "command must not be empty when given (omit it to use the image's entrypoint)");
            if (cmd.Count > MaxArgs) Add("command", $"command has more than {MaxArgs} elements");
            if (cmd.Any(a => a is null || a.Contains('\0'))) Add("command", "command elements must be strings without NUL characters");
        }
        if (s.Args is { } args)
        {
            if (args.Count > MaxArgs) Add("args", $"args has more than {MaxArgs} elements");
            if (args.Any(a => a is null || a.Contains('\0'))) Add("args", "args elements must be strings without NUL characters");
        }
        if (s.Env is { } env) ValidateEnv("env", env, Add);
        if (s.WorkingDir is { } wd && (!wd.StartsWith('/') || wd.Contains('\0')))
            Add("workingDir", "workingDir must be an absolute path");
        if (s.User is { } user && (user.Length == 0 || user.Length > 256 || user.Any(c => char.IsWhiteSpace(c) || char.IsControl(c))))
            Add("user", "user must be \"uid\", \"uid:gid\", \"name\" or \"name:group\"");

        double cpus = JobDefaults.Cpus;
        long memory = JobDefaults.MemoryBytes;
        int pids = JobDefaults.Pids;
        if (s.Resources is { } r)
        {
            if (r.Cpus is { } c)
            {
                if (double.IsNaN(c) || c <= 0) Add("resources.cpus", "cpus must be a positive number (fractions allowed, e.g. 0.5)");
                else if (c > JobDefaults.MaxCpus) Add("resources.cpus", $"cpus must be at most {JobDefaults.MaxCpus}");
                else if (c < 0.01) Add("resources.cpus", "cpus must be at least 0.01");
                else cpus = c;
            }
            if (r.Memory is { } m && m.ValueKind != JsonValueKind.Null)
            {
                if (TryMemory(m, out var bytes, out var why))
                {
                    if (bytes < JobDefaults.MinMemoryBytes) Add("resources.memory", $"memory must be at least {Quantity.FormatBytes(JobDefaults.MinMemoryBytes)}");
                    else memory = bytes;
                }
                else Add("resources.memory", why);
            }
            if (r.Pids is { } p)
            {
                if (p < 1 || p > JobDefaults.MaxPids) Add("resources.pids", $"pids must be an integer between 1 and {JobDefaults.MaxPids}");
                else pids = p;
            }
        }

        int timeout = JobDefaults.TimeoutSeconds;
        if (s.TimeoutSeconds is { } t)
        {
            if (t <= 0 || t > JobDefaults.MaxTimeoutSeconds) Add("timeoutSeconds", $"timeoutSeconds must be between 1 and {JobDefaults.MaxTimeoutSeconds}");
            else timeout = t;
        }

        if (s.StopGraceSeconds is < 0 or > JobDefaults.MaxStopGraceSeconds)
            Add("stopGraceSeconds", $"stopGraceSeconds must be between 0 (SIGKILL at once) and {JobDefaults.MaxStopGraceSeconds}");

        var queue = s.Queue ?? JobDefaults.Queue;
        if (!QueueName().IsMatch(queue))
            Add("queue", "queue must be 1-63 characters of lowercase letters, digits, '_', '-' and start with a letter or digit");

        if (s.Labels is { } labels)
        {
            if (labels.Count > MaxLabels) Add("labels", $"at most {MaxLabels} labels");
            foreach (var (k, v) in labels)
            {
                if (!LabelKey().IsMatch(k)) Add($"labels.{k}", "label keys are 1-128 characters of letters, digits, '_', '.', '/', '-'");
                else if (v is null || v.Length > 256) Add($"labels.{k}", "label values are strings of at most 256 characters");
            }
        }

        var pullPolicy = s.PullPolicy ?? ImagePullPolicy.IfNotPresent;
        if (!ImagePullPolicy.All.Contains(pullPolicy))
            Add("pullPolicy", $"pullPolicy must be one of {string.Join(", ", ImagePullPolicy.All)}");

        var spec = new JobSpec
        {
            Name = string.IsNullOrWhiteSpace(s.Name) ? null : s.Name,
            Image = s.Image?.Trim() ?? "",
            Command = s.Command,
            Args = s.Args,
            Env = s.Env ?? new Dictionary<string, string>(),
            WorkingDir = s.WorkingDir,
            User = s.User,
            Resources = new ResourceRequest { Cpus = cpus, MemoryBytes = memory, Pids = pids },
            TimeoutSeconds = timeout,
            Queue = queue,
            Labels = s.Labels ?? new Dictionary<string, string>(),
            PullPolicy = pullPolicy,
            StopGraceSeconds = s.StopGraceSeconds,
        };

        // Feature areas validate their own fields and set them on the spec (each in its own file).
        ValidateIsolation(s, Add, ref spec);
        ValidateGpus(s, Add, ref spec);
        ValidateScheduling(s, Add, ref spec);
        ValidateWorkflows(s, Add, ref spec);
        ValidateSecrets(s, Add, ref spec);
        ValidateCommandLength(s, Add);
        ValidateDisk(s, Add, ref spec);
        ValidateLogs(s, Add, ref spec);

        return errors.Count > 0 ? ValidationResult.Invalid(errors) : ValidationResult.Valid(spec);
    }

    /// <summary>Isolation fields: network, capabilities, inputs, volumes, shm, ulimits (issue: isolation and limits).</summary>
    static partial void ValidateIsolation(JobSubmission s, Action<string, string> add, ref JobSpec spec);

    /// <summary>GPU fields (issue: GPUs).</summary>
    static partial void ValidateGpus(JobSubmission s, Action<string, string> add, ref JobSpec spec);

    /// <summary>Scheduling fields: retries, node selectors (issue: scheduling).</summary>
    static partial void ValidateScheduling(JobSubmission s, Action<string, string> add, ref JobSpec spec);

    /// <summary>Workflow fields: array, dependsOn, inputsFrom (issue: workflows).</summary>
    static partial void ValidateWorkflows(JobSubmission s, Action<string, string> add, ref JobSpec spec);
    /// <summary>Secret fields: secretEnv, notify (issue 18).</summary>
    static partial void ValidateSecrets(JobSubmission s, Action<string, string> add, ref JobSpec spec);

    /// <summary>Names and values of an environment map (<paramref name="field"/>: env or secretEnv). Values are
    /// never quoted: they may be secrets.</summary>
    private static void ValidateEnv(string field, Dictionary<string, string> env, Action<string, string> add)
    {
        if (env.Count > MaxEnv) add(field, $"{field} has more than {MaxEnv} variables");
        foreach (var (k, v) in env)
        {
            if (!EnvName().IsMatch(k)) add($"{field}.{k}", "environment variable names must match [A-Za-z_][A-Za-z0-9_]*");
            else if (v is null || v.Contains('\0')) add($"{field}.{k}", "value must be a string without NUL characters");
        }
    }

    /// <summary>resources.disk (issue: disk limits).</summary>
    static partial void ValidateDisk(JobSubmission s, Action<string, string> add, ref JobSpec spec);

    /// <summary>Log fields: the per-stream cap (issue: logs).</summary>
    static partial void ValidateLogs(JobSubmission s, Action<string, string> add, ref JobSpec spec);

    /// <summary>A memory amount as the API accepts it: a quantity ("64Mi") or a number of bytes; <paramref name="why"/> says what is wrong.</summary>
    public static bool TryMemory(JsonElement m, out long bytes, out string why)
    {
        why = "";
        bytes = 0;
        switch (m.ValueKind)
        {
            case JsonValueKind.Number:
                if (m.TryGetInt64(out bytes) && bytes > 0) return true;
                why = m.TryGetInt64(out _) || m.TryGetDouble(out var d) && d <= 0
                    ? "memory must be positive: an integer of bytes or a quantity such as \"64Mi\", \"2Gi\", \"512M\""
                    : "memory must be a whole number of bytes or a quantity such as \"64Mi\", \"2Gi\", \"512M\"";
                return false;
            case JsonValueKind.String:
                if (Quantity.TryParseBytes(m.GetString(), out bytes))
                {
                    if (bytes > 0) return true;
                    why = $"memory \"{m.GetString()}\" must be positive";
                    return false;
                }
                why = $"memory \"{m.GetString()}\" is not a quantity: use bytes or a number with a suffix such as \"64Mi\", \"2Gi\", \"512M\"";
                return false;
            default:
                why = "memory must be a string quantity (\"64Mi\") or an integer of bytes";
                return false;
        }
    }
}

public sealed class ValidationResult
{
    private ValidationResult(JobSpec? spec, IReadOnlyDictionary<string, string[]> errors) { Spec = spec; Errors = errors; }
    public JobSpec? Spec { get; }
    /// <summary>Field path → messages, in the shape of RFC 7807 validation problem details.</summary>
    public IReadOnlyDictionary<string, string[]> Errors { get; }
    public bool IsValid => Spec is not null;

    public static ValidationResult Valid(JobSpec spec) => new(spec, new Dictionary<string, string[]>());
    public static ValidationResult Invalid(Dictionary<string, List<string>> errors) =>
        new(null, errors.ToDictionary(e => e.Key, e => e.Value.ToArray()));
}
