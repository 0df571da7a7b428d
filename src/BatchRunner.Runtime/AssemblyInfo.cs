[assembly: System.Runtime.CompilerServices.InternalsVisibleTo("BatchRunner.Runtime.Tests")]
