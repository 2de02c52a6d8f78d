// The lab drives Linux network namespaces and nftables: Linux only.
[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]

namespace QubesFirewall.Lab.Tests.Lab;

/// <summary>
/// Every lab test class carries <c>[Collection(LabCollection.Name)]</c>: they share one <see cref="LabTopology"/>
/// (default layout) and never run in parallel with each other or with any other test collection.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class LabCollection : ICollectionFixture<LabTopology>
{
    public const string Name = "Lab";
}
