namespace BatchRunner.Server.Auth;

/// <summary>
/// What a key may do. Public contract (the <c>role</c> of <c>/api/v1/apikeys</c>): add roles, never rename one.
/// </summary>
public static class Roles
{
    /// <summary>Everything, in every tenant: keys, tenants, images, the Hangfire dashboard.</summary>
    public const string Admin = "admin";
    /// <summary>Submits, reads, cancels and deletes the jobs of its own tenant.</summary>
    public const string User = "user";
    /// <summary>Reads the jobs of its own tenant (and the nodes).</summary>
    public const string Viewer = "viewer";

    public static readonly IReadOnlyList<string> All = [Admin, User, Viewer];
}

/// <summary>The authorization policies every endpoint declares one of (<c>RequireAuthorization(Policies.X)</c>).</summary>
public static class Policies
{
    /// <summary>Any valid key: reading jobs (of its tenant), logs, outputs, nodes.</summary>
    public const string Read = "read";
    /// <summary>admin or user: submitting and cancelling jobs (of its tenant).</summary>
    public const string Submit = "submit";
    /// <summary>admin only: keys, tenants, images, the dashboard.</summary>
    public const string Admin = "admin";

    public static IServiceCollection AddBatchRunnerPolicies(this IServiceCollection services) =>
        services.AddAuthorizationBuilder()
            .AddPolicy(Read, p => p.RequireRole(Roles.All))
            .AddPolicy(Submit, p => p.RequireRole(Roles.Admin, Roles.User))
            .AddPolicy(Admin, p => p.RequireRole(Roles.Admin))
            .Services;
}
