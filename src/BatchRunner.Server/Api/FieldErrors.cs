namespace BatchRunner.Server.Api;

/// <summary>
/// The field errors of one <c>400</c> answer, gathered from every check so that a user sees all of them at once: the
/// shape of the document first, then the validator's, the node's policy and the server's own. A later error at or
/// under a field that already has one (<c>resources.memory</c> once <c>resources</c> was not an object, <c>image is
/// required</c> once <c>image</c> was a number) is left out: the first error already says what is wrong there.
/// </summary>
public sealed class FieldErrors
{
    private readonly Dictionary<string, List<string>> _errors = new(StringComparer.Ordinal);
    private readonly List<string> _covered = [];

    public int Count => _errors.Count;

    /// <summary>Adds <paramref name="errors"/>, all of them (the first source), or only those no earlier field covers.</summary>
    public FieldErrors Add(IEnumerable<KeyValuePair<string, string[]>> errors)
    {
        var before = _covered.ToList();
        foreach (var (field, messages) in errors)
        {
            if (Covered(before, field)) continue;
            foreach (var m in messages) Add(field, m, before);
        }
        return this;
    }

    public FieldErrors Add(string field, string message) => Add(field, message, _covered);

    public bool Has(string field) => _errors.ContainsKey(field);

    public Dictionary<string, string[]> ToDictionary() => _errors.ToDictionary(e => e.Key, e => e.Value.ToArray());

    private FieldErrors Add(string field, string message, List<string> covered)
    {
        if (Covered(covered, field) && !_errors.ContainsKey(field)) return this;
        if (!_errors.TryGetValue(field, out var list))
        {
            _errors[field] = list = [];
            _covered.Add(field);
        }
        if (!list.Contains(message)) list.Add(message);
        return this;
    }

    private static bool Covered(List<string> covered, string field) =>
        covered.Any(c => field == c || field.StartsWith(c + ".", StringComparison.Ordinal) || field.StartsWith(c + "[", StringComparison.Ordinal));
}
