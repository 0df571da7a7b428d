using BatchRunner.Oci.Registry;

namespace BatchRunner.Oci.Tests;

/// <summary>The test registries listen on 127.0.0.1, which the default policy refuses: tests that pull from them
/// name it, as an operator with a local registry would.</summary>
internal static class TestPolicies
{
    public static readonly RegistryPolicy LoopbackRegistries = new([RegistryPolicy.AnyPublicHost, "127.0.0.1"]);
}
