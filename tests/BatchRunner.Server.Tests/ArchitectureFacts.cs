using System.Reflection;
using System.Reflection.Emit;
using System.Text.RegularExpressions;
using BatchRunner.Server.Storage;

namespace BatchRunner.Server.Tests;

/// <summary>
/// The dependency rules between the server's folders (ARCHITECTURE.md), checked on the compiled assembly: every type
/// a class uses in its fields, signatures, locals and IL (calls, field accesses, type tokens), and every string
/// literal it loads. A folder is a namespace under BatchRunner.Server; nested and compiler-generated types (lambdas,
/// async state machines) count for the type that declares them.
/// </summary>
public sealed partial class ArchitectureFacts
{
    private static readonly Assembly Server = typeof(Program).Assembly;
    private static readonly Lazy<IReadOnlyList<Use>> Uses = new(() => Server.GetTypes().Where(t => FolderOf(t) is not null).SelectMany(UsesOf).Distinct().ToList());

    private sealed record Use(Type User, string Folder, Type? UsedType, string? Literal);

    [Theory]
    [InlineData("Api", "Execution")]
    [InlineData("Execution", "Api")]
    [InlineData("Execution", "Dashboard")]
    [InlineData("Dashboard", "Execution")]
    [InlineData("Scheduling", "Api")]
    [InlineData("Scheduling", "Execution")]
    [InlineData("Scheduling", "Nodes")]
    [InlineData("Observability", "Api")]
    [InlineData("Observability", "Execution")]
    [InlineData("Workflows", "Api")]
    [InlineData("Workflows", "Execution")]
    [InlineData("Api", "Workflows")]
    [InlineData("Execution", "Workflows")]
    [InlineData("Auth", "Api")]
    [InlineData("Auth", "Execution")]
    [InlineData("Auth", "Dashboard")]
    [InlineData("Notifications", "Execution")]
    public void Folder_DoesNotUse_AnotherFolder(string folder, string forbidden)
    {
        var violations = Uses.Value.Where(u => u.Folder == folder && u.UsedType is { } t && FolderOf(t) == forbidden)
            .Select(u => $"{u.User.FullName} uses {u.UsedType!.FullName}").Distinct().Order().ToList();
        Assert.True(violations.Count == 0, $"{folder} must not depend on {forbidden}:\n{string.Join('\n', violations)}");
    }

    [Fact]
    public void Storage_UsesNoOtherFolderOfTheServer()
    {
        var violations = Uses.Value.Where(u => u.Folder == "Storage" && u.UsedType is { } t && FolderOf(t) is { } f && f != "Storage")
            .Select(u => $"{u.User.FullName} uses {u.UsedType!.FullName}").Distinct().Order().ToList();
        Assert.True(violations.Count == 0, $"Storage is the bottom layer:\n{string.Join('\n', violations)}");
    }

    [Fact]
    public void OutsideHosting_OnlyTheOptionTypesOfHosting_AreUsed()
    {
        var violations = Uses.Value.Where(u => u.Folder != "Hosting" && u.UsedType is { } t && FolderOf(t) == "Hosting" && !IsOptionType(t))
            .Select(u => $"{u.User.FullName} uses {u.UsedType!.FullName}").Distinct().Order().ToList();
        Assert.True(violations.Count == 0, $"Hosting wires the host; others read only its options:\n{string.Join('\n', violations)}");
    }

    [Fact]
    public void OutsideStorage_NoTypeUsesNpgsql_OrEnqueuesHangfireJobs()
    {
        var violations = Uses.Value.Where(u => u.Folder != "Storage" && u.UsedType is { } t &&
                (t.Namespace is "Npgsql" or "NpgsqlTypes" || t == typeof(Hangfire.IBackgroundJobClient)))
            .Select(u => $"{u.User.FullName} uses {u.UsedType!.FullName}").Distinct().Order().ToList();
        Assert.True(violations.Count == 0, $"all SQL and the Hangfire enqueue live in Storage:\n{string.Join('\n', violations)}");
    }

    [Fact]
    public void OutsideStorage_NoStringNamesABatchRunnerTable()
    {
        // The tables the migrations create, and the one the migrator keeps.
        var tables = Migrator.Scripts().SelectMany(s => CreateTable().Matches(s.Sql).Select(m => m.Groups[1].Value)).Append("schema_migrations").ToHashSet();
        Assert.Contains("jobs", tables);
        var table = new Regex($@"\bbatchrunner\.({string.Join('|', tables)})\b");
        var violations = Uses.Value.Where(u => u.Folder != "Storage" && u.Literal is { } s && table.IsMatch(s))
            .Select(u => $"{u.User.FullName}: \"{u.Literal}\"").Distinct().Order().ToList();
        Assert.True(violations.Count == 0, $"SQL on batchrunner.* lives in Storage:\n{string.Join('\n', violations)}");
    }

    [Fact]
    public void TheChecks_SeeWhatTheyLookFor()
    {
        // Guards against a walker that sees nothing: known uses must be found.
        Assert.Contains(Uses.Value, u => u.User == typeof(BatchRunner.Server.Api.JobsApi) && u.UsedType == typeof(JobQueue));
        Assert.Contains(Uses.Value, u => u.User == typeof(JobStore) && u.Literal?.Contains("batchrunner.jobs") == true);
        Assert.Contains(Uses.Value, u => u.User == typeof(JobStore) && u.UsedType == typeof(Npgsql.NpgsqlCommand));
        Assert.Contains(Uses.Value, u => u.User == typeof(BatchRunner.Server.Execution.Phases.ContainerPhase) && u.UsedType == typeof(BatchRunner.Runtime.HostFiles));
    }

    [GeneratedRegex(@"create table (?:if not exists )?batchrunner\.(\w+)", RegexOptions.IgnoreCase)]
    private static partial Regex CreateTable();

    private static bool IsOptionType(Type t) => t.Name.EndsWith("Options", StringComparison.Ordinal) || t.Name.EndsWith("Settings", StringComparison.Ordinal);

    /// <summary>"Api" for BatchRunner.Server.Api.JobsApi (and its nested types); null outside the server's folders.</summary>
    private static string? FolderOf(Type t)
    {
        while (t.IsNested) t = t.DeclaringType!;
        const string prefix = "BatchRunner.Server.";
        return t.Namespace is { } ns && ns.StartsWith(prefix, StringComparison.Ordinal) ? ns[prefix.Length..].Split('.')[0] : null;
    }

    private static IEnumerable<Use> UsesOf(Type type)
    {
        var folder = FolderOf(type)!;
        var owner = type;
        while (owner.IsNested) owner = owner.DeclaringType!;
        IEnumerable<Use> Types(IEnumerable<Type?> types) => types.SelectMany(Flatten).Select(t => new Use(owner, folder, t, null));

        const BindingFlags all = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;
        var uses = new List<Use>();
        uses.AddRange(Types([type.BaseType, .. type.GetInterfaces()]));
        uses.AddRange(Types(type.GetFields(all).Select(f => f.FieldType)));
        foreach (var method in type.GetMethods(all).Cast<MethodBase>().Concat(type.GetConstructors(all)))
        {
            if (method is MethodInfo mi) uses.AddRange(Types([mi.ReturnType]));
            uses.AddRange(Types(method.GetParameters().Select(p => p.ParameterType)));
            var body = method.GetMethodBody();
            if (body is null) continue;
            uses.AddRange(Types(body.LocalVariables.Select(l => l.LocalType)));
            foreach (var (typeUsed, literal) in Il(method, body.GetILAsByteArray() ?? []))
                uses.Add(literal is not null ? new Use(owner, folder, null, literal) : new Use(owner, folder, typeUsed, null));
        }
        return uses.Where(u => u.UsedType is not null || u.Literal is not null);
    }

    /// <summary>A type and the types it is made of (generic arguments, element types).</summary>
    private static IEnumerable<Type> Flatten(Type? t)
    {
        if (t is null) yield break;
        if (t.HasElementType) { foreach (var e in Flatten(t.GetElementType())) yield return e; yield break; }
        if (t.IsGenericParameter) yield break;
        yield return t.IsGenericType ? t.GetGenericTypeDefinition() : t;
        if (t.IsGenericType)
            foreach (var a in t.GetGenericArguments())
                foreach (var e in Flatten(a)) yield return e;
    }

    private static readonly Dictionary<short, OpCode> OpCodesByValue = typeof(OpCodes).GetFields(BindingFlags.Public | BindingFlags.Static)
        .Select(f => (OpCode)f.GetValue(null)!).ToDictionary(o => o.Value);

    /// <summary>The types and string literals <paramref name="il"/> refers to (member tokens count as their declaring type and signature).</summary>
    private static IEnumerable<(Type? Type, string? Literal)> Il(MethodBase method, byte[] il)
    {
        var module = method.Module;
        var typeArgs = method.DeclaringType is { IsGenericType: true } dt ? dt.GetGenericArguments() : null;
        var methodArgs = method.IsGenericMethod ? method.GetGenericArguments() : null;
        for (var i = 0; i < il.Length;)
        {
            short value = il[i++];
            if (value == 0xFE) value = (short)(0xFE00 | il[i++]);
            var op = OpCodesByValue[value];
            switch (op.OperandType)
            {
                case OperandType.InlineNone: break;
                case OperandType.ShortInlineBrTarget or OperandType.ShortInlineI or OperandType.ShortInlineVar: i += 1; break;
                case OperandType.InlineVar: i += 2; break;
                case OperandType.InlineI8 or OperandType.InlineR: i += 8; break;
                case OperandType.InlineSwitch: i += 4 + 4 * BitConverter.ToInt32(il, i); break;
                case OperandType.InlineString:
                    yield return (null, module.ResolveString(BitConverter.ToInt32(il, i)));
                    i += 4;
                    break;
                case OperandType.InlineField or OperandType.InlineMethod or OperandType.InlineTok or OperandType.InlineType:
                {
                    var token = BitConverter.ToInt32(il, i);
                    i += 4;
                    MemberInfo? member = null;
                    try { member = module.ResolveMember(token, typeArgs, methodArgs); }
                    catch (ArgumentException) { }
                    switch (member)
                    {
                        case Type t:
                            foreach (var e in Flatten(t)) yield return (e, null);
                            break;
                        case FieldInfo f:
                            foreach (var e in Flatten(f.DeclaringType).Concat(Flatten(f.FieldType))) yield return (e, null);
                            break;
                        case MethodBase m:
                            foreach (var e in Flatten(m.DeclaringType)) yield return (e, null);
                            if (m is MethodInfo mi) foreach (var e in Flatten(mi.ReturnType)) yield return (e, null);
                            foreach (var e in m.GetParameters().SelectMany(p => Flatten(p.ParameterType))) yield return (e, null);
                            break;
                    }
                    break;
                }
                default: i += 4; break;
            }
        }
    }
}
