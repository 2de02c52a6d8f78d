using System.Management.Automation;
using QubesFirewall.Engine;
using QubesFirewall.Engine.Model;

namespace QubesFirewall.PowerShell.Cmdlets;

/// <summary>Lists a qube's firewall rules as qubesd's Get shows them (expired rules left out).</summary>
[Cmdlet(VerbsCommon.Get, "QubeFirewallRule")]
[OutputType(typeof(QubeFirewallRule))]
public sealed class GetQubeFirewallRuleCommand : QubeCmdlet
{
    /// <summary>The qubes (wildcards allowed); without it, every qube, as the other Get- cmdlets list everything.</summary>
    [Parameter(Position = 0, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
    [Alias("Name")]
    [SupportsWildcards]
    [ArgumentCompleter(typeof(QubeNameCompleter))]
    public string[]? VMName { get; set; }

    protected override void ProcessRecord()
    {
        foreach (var name in VMName ?? ["*"])
        {
            var targets = Resolve(name);
            foreach (var qube in targets)
            {
                // `Get-Qube | Get-QubeFirewallRule` passes dom0 too; it has no firewall to list.
                if (qube == "dom0") { WriteVerbose("dom0 has no Qubes firewall; skipped."); continue; }
                if (!TryEngine(() => Backend.GetFirewall(qube), out var document)) continue;
                foreach (var rule in QubeFirewallRule.Visible(qube, document.Rules, Now)) WriteObject(rule);
            }
        }
    }

    private IEnumerable<string> Resolve(string name)
    {
        if (!WildcardPattern.ContainsWildcardCharacters(name)) return [name];
        if (NamePattern(name) is not { } wildcard) return [];
        var inventory = Backend.GetInventory();
        return inventory.Names.Where(wildcard.IsMatch).Where(n => inventory.Find(n)!.Class != QubeClass.AdminVM).ToList();
    }
}
