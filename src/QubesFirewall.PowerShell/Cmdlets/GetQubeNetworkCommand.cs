using System.Management.Automation;
using QubesFirewall.Engine.Network;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.PowerShell.Cmdlets;

/// <summary>
/// One object per qube with its place in the network: netvm chain, who enforces its rules, a rule summary,
/// addresses, and the port forwards, links and bindings that touch it; in tree order (sys-net, then its clients).
/// </summary>
[Cmdlet(VerbsCommon.Get, "QubeNetwork")]
[OutputType(typeof(QubeNetworkNode))]
public sealed class GetQubeNetworkCommand : QubeCmdlet
{
    [Parameter(Position = 0, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
    [Alias("VMName")]
    [SupportsWildcards]
    [ArgumentCompleter(typeof(QubeNameCompleter))]
    [ValidateNotNullOrEmpty]
    public string[]? Name { get; set; }

    private IReadOnlyList<QubeNetworkNode>? _nodes;

    protected override void ProcessRecord()
    {
        if (_nodes is null && !TryEngine(() => NetworkView.Build(new AuditContext(Backend.GetInventory(), Backend.GetFirewall, Now)), out _nodes)) return;
        var inventory = Backend.GetInventory();
        var written = new HashSet<string>(StringComparer.Ordinal);
        foreach (var pattern in Name ?? ["*"])
        {
            if (QubePattern(pattern, inventory) is not { } wildcard) continue;
            foreach (var node in _nodes!.Where(n => wildcard.IsMatch(n.Name) && written.Add(n.Name))) WriteObject(node);
        }
    }
}
