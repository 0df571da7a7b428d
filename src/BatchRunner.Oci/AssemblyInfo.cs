// ImageStore.UnpackStarting: the test that proves layers unpack in parallel holds each unpack until all have started.
[assembly: System.Runtime.CompilerServices.InternalsVisibleTo("BatchRunner.Oci.Tests")]
