namespace BatchRunner.Core;

public static partial class JobSpecValidator
{
    static partial void ValidateScheduling(JobSubmission s, Action<string, string> add, ref JobSpec spec)
    {
        if (s.NodeSelector is { } selector)
        {
            foreach (var (k, v) in selector)
                if (!LabelKey().IsMatch(k) || v is null || v.Length > 256)
                    add($"nodeSelector.{k}", "node selector keys are label keys; values are strings of at most 256 characters");
            spec = spec with { NodeSelector = selector };
        }

        if (s.Retry is { } r)
        {
            if (r.Limit is < 0 or > RetryPolicy.MaxLimit) add("retry.limit", $"retry.limit must be between 0 and {RetryPolicy.MaxLimit}");
            if (r.BackoffSeconds is < 0 or > 3600) add("retry.backoffSeconds", "retry.backoffSeconds must be between 0 and 3600");
            foreach (var reason in r.OnReasons ?? [])
                if (!RetryPolicy.RetryableReasons.Contains(reason))
                    add("retry.onReasons", $"unknown reason \"{reason}\"; one of {string.Join(", ", RetryPolicy.RetryableReasons)}");
            foreach (var code in r.OnExitCodes ?? [])
                if (code is < 1 or > 255) add("retry.onExitCodes", $"exit code {code} is not between 1 and 255");
            spec = spec with
            {
                Retry = new RetryPolicy
                {
                    Limit = r.Limit ?? ((r.OnExitCodes?.Count > 0 || r.OnReasons?.Count > 0) ? 1 : 0),
                    OnExitCodes = r.OnExitCodes ?? [],
                    OnReasons = r.OnReasons ?? [],
                    BackoffSeconds = r.BackoffSeconds ?? 5,
                },
            };
        }
    }
}
