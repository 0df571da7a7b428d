using System.Text;

namespace BatchRunner.Core;

public static partial class JobSpecValidator
{
    /// <summary>The most bytes <c>command</c>, <c>args</c>, <c>env</c> and <c>secretEnv</c> may take together, counted as
    /// the kernel counts <c>execve</c>'s arguments and environment (each string with its NUL, <c>NAME=value</c> for
    /// variables): 256 KiB, Linux's classic <c>ARG_MAX</c>. A job past it could not start anyway, and the limit keeps
    /// every stored spec, and every page of the job list, bounded.</summary>
    public const int MaxCommandBytes = 256 * 1024;

    public const int MaxNotifyUrlLength = 2048;
    /// <summary>A shorter HMAC key could be guessed by whoever sees signed calls.</summary>
    public const int MinNotifySecretLength = 16;
    public const int MaxNotifySecretLength = 1024;

    static partial void ValidateSecrets(JobSubmission s, Action<string, string> add, ref JobSpec spec)
    {
        if (s.SecretEnv is { } secrets)
        {
            ValidateEnv("secretEnv", secrets, add);
            foreach (var name in secrets.Keys.Where(k => s.Env?.ContainsKey(k) == true))
                add($"secretEnv.{name}", $"{name} is also in env: a variable is either plain (env) or secret (secretEnv)");
            spec = spec with { SecretEnv = secrets, SecretEnvNames = secrets.Keys.Order(StringComparer.Ordinal).ToList() };
        }

        if (s.Notify is { } notify)
        {
            if (string.IsNullOrWhiteSpace(notify.Url)) add("notify.url", "notify.url is required: the http(s) URL to POST the final job document to");
            else if (WhyNotWebhookUrl(notify.Url) is { } why) add("notify.url", why);
            if (notify.Secret is { } secret && (secret.Length < MinNotifySecretLength || secret.Length > MaxNotifySecretLength || secret.Any(char.IsControl)))
                add("notify.secret", $"notify.secret must be {MinNotifySecretLength} to {MaxNotifySecretLength} printable characters");
            spec = spec with { Notify = new JobNotify { Url = notify.Url?.Trim() ?? "", Secret = notify.Secret } };
        }
    }

    /// <summary>Why <paramref name="url"/> cannot be a webhook URL (its syntax only; which hosts are allowed is the
    /// server's policy), or null.</summary>
    public static string? WhyNotWebhookUrl(string url)
    {
        if (url.Length > MaxNotifyUrlLength) return $"notify.url must be at most {MaxNotifyUrlLength} characters";
        if (!Uri.TryCreate(url.Trim(), UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https") || string.IsNullOrEmpty(uri.Host))
            return "notify.url must be an absolute http or https URL";
        // The URL is shown in the job document: credentials do not belong in it (the signature authenticates the call).
        if (uri.UserInfo.Length > 0) return "notify.url must not carry a user name or password; the call is signed instead (X-BatchRunner-Signature)";
        if (uri.Fragment.Length > 0) return "notify.url must not have a fragment (#...)";
        return null;
    }

    /// <summary>The execve budget (<see cref="MaxCommandBytes"/>), reported on the field that takes the most of it.</summary>
    private static void ValidateCommandLength(JobSubmission s, Action<string, string> add)
    {
        static long Strings(List<string>? items) => items?.Sum(a => (long)Encoding.UTF8.GetByteCount(a ?? "") + 1) ?? 0;
        static long Variables(Dictionary<string, string>? env) =>
            env?.Sum(kv => (long)Encoding.UTF8.GetByteCount(kv.Key) + Encoding.UTF8.GetByteCount(kv.Value ?? "") + 2) ?? 0;
        (string Field, long Bytes)[] parts =
            [("command", Strings(s.Command)), ("args", Strings(s.Args)), ("env", Variables(s.Env)), ("secretEnv", Variables(s.SecretEnv))];
        var total = parts.Sum(p => p.Bytes);
        if (total <= MaxCommandBytes) return;
        var largest = parts.MaxBy(p => p.Bytes);
        add(largest.Field, $"command, args, env and secretEnv take {total} bytes together " +
            $"({string.Join(", ", parts.Where(p => p.Bytes > 0).Select(p => $"{p.Field} {p.Bytes}"))}); " +
            $"at most {MaxCommandBytes} (256 KiB, like the kernel's ARG_MAX) are allowed");
    }
}
