// The shim is internal: Oci and Runtime (and their tests) call it; the server reaches the host through them.
[assembly: System.Runtime.CompilerServices.InternalsVisibleTo("BatchRunner.Oci")]
[assembly: System.Runtime.CompilerServices.InternalsVisibleTo("BatchRunner.Runtime")]
[assembly: System.Runtime.CompilerServices.InternalsVisibleTo("BatchRunner.Oci.Tests")]
[assembly: System.Runtime.CompilerServices.InternalsVisibleTo("BatchRunner.Runtime.Tests")]
