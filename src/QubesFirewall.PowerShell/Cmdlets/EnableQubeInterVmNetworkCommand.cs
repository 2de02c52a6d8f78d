using System.Management.Automation;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.PowerShell.Cmdlets;

/// <summary>
/// Lets one qube open connections to another behind the same network qube: declares the links (features
/// qubesfirewall.link.* of the source) and plans their three parts — the network qube's forward accept, the
/// destination's input accept, the source's own Qubes firewall rule. One ShouldProcess for the links of a pipeline.
/// </summary>
[Cmdlet(VerbsLifecycle.Enable, "QubeInterVmNetwork", SupportsShouldProcess = true)]
[OutputType(typeof(QubeInterVmLink))]
public sealed class EnableQubeInterVmNetworkCommand : InterVmLinkCmdlet
{
    protected override void Check(QubesInventory inventory, IReadOnlyList<InterVmLink> links) => InterVmLinkPlanner.CheckEnable(inventory, links);

    protected override InterVmLinkPlan Plan(IReadOnlyList<InterVmLink> links) =>
        InterVmLinkPlanner.PlanEnable(Backend, links, ChangeOptions());

    protected override void WriteResult(InterVmLinkPlan plan, IReadOnlyList<PortForwardHopResult> hops) => LinkOutput.Write(this, Backend, plan.Links, Now);
}

/// <summary>The objects Enable -PassThru writes.</summary>
internal static class LinkOutput
{
    /// <summary>Writes the links as Get-QubeInterVmNetwork shows them now (re-read after the change).</summary>
    public static void Write(Cmdlet cmdlet, Engine.Backends.IQubesBackend backend, IReadOnlyList<InterVmLink> links, DateTimeOffset now)
    {
        var names = new HashSet<string>(links.Select(l => l.From + "\0" + l.FeatureName), StringComparer.Ordinal);
        var froms = new HashSet<string>(links.Select(l => l.From), StringComparer.Ordinal);
        foreach (var item in InterVmLinkPlanner.List(backend.GetInventory(), backend.GetFirewall, now, froms.Contains))
            if (names.Contains(item.From + "\0" + item.FeatureName)) cmdlet.WriteObject(item);
    }
}
