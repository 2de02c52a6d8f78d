using System.Management.Automation;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.PowerShell.Cmdlets;

/// <summary>
/// Removes exactly the links the same parameters enabled: the source's firewall rule (unless a remaining link
/// needs it), the accepts in the network qube and the destination, then the declarations. Never "all":
/// From and To are mandatory; without -Port it is the all-ports link.
/// </summary>
[Cmdlet(VerbsLifecycle.Disable, "QubeInterVmNetwork", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High)]
[OutputType(typeof(PortForwardHopResult))]
public sealed class DisableQubeInterVmNetworkCommand : InterVmLinkCmdlet
{
    protected override void Check(QubesInventory inventory, IReadOnlyList<InterVmLink> links) => InterVmLinkPlanner.CheckDisable(inventory, links);

    protected override InterVmLinkPlan Plan(IReadOnlyList<InterVmLink> links) =>
        InterVmLinkPlanner.PlanDisable(Backend, links, ChangeOptions());

    protected override void WriteResult(InterVmLinkPlan plan, IReadOnlyList<PortForwardHopResult> hops) => WriteObject(hops, enumerateCollection: true);
}
