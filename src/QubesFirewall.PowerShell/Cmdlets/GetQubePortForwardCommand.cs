using System.Management.Automation;
using QubesFirewall.Engine;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.PowerShell.Cmdlets;

/// <summary>Lists the declared port forwards (the qubesfirewall.forward.* features) with the network qubes they cross.</summary>
[Cmdlet(VerbsCommon.Get, "QubePortForward")]
[OutputType(typeof(QubePortForward))]
public sealed class GetQubePortForwardCommand : QubeCmdlet
{
    [Parameter(Position = 0, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
    [Alias("Name")]
    [SupportsWildcards]
    [ArgumentCompleter(typeof(QubeNameCompleter))]
    public string[]? VMName { get; set; }

    /// <summary>Only forwards of these ports (the port opened on the network side).</summary>
    [Parameter]
    [ValidateRange(1, 65535)]
    public int[]? Port { get; set; }

    [Parameter]
    public ForwardProtocol? Protocol { get; set; }

    protected override void ProcessRecord()
    {
        if (!TryEngine(() => Backend.GetInventory(), out var inventory)) return;
        var patterns = VMName is { Length: > 0 } ? VMName : ["*"];
        foreach (var pattern in patterns)
        {
            if (QubePattern(pattern, inventory) is not { } wildcard) continue;
            foreach (var forward in PortForwardPlanner.List(inventory, Now, name => wildcard.IsMatch(name)))
            {
                if (Port is { Length: > 0 } && (forward.Port is not { } p || !Port.Contains(p))) continue;
                if (Protocol is { } proto && forward.Protocol != proto) continue;
                if (!forward.IsValid)
                {
                    WriteError(ToErrorRecord(new QubesFirewallException(ErrorIds.InvalidPortForwardFeature, FailureKind.InvalidData,
                        $"{forward.Problem} Nothing is generated for it. Fix the feature (qvm-features {forward.VMName} {forward.FeatureName} '...') or remove it: Remove-QubePortForward -VMName {forward.VMName} -Port {forward.Port?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "<port>"}{(forward.Protocol == ForwardProtocol.Udp ? " -Protocol Udp" : "")}.",
                        forward.FeatureName)));
                    continue;
                }
                if (forward.Problem is not null) WriteWarning($"{forward}: {forward.Problem}");
                WriteObject(forward);
            }
        }
    }
}
