using System.Management.Automation;
using QubesFirewall.Engine.Agent;

namespace QubesFirewall.PowerShell.Cmdlets;

/// <summary>Tells, from dom0 facts only (the qube's <c>qubesfirewall.agent</c> feature), whether qubes have the agent this module ships.</summary>
[Cmdlet(VerbsDiagnostic.Test, "QubeFirewallAgent")]
[OutputType(typeof(QubeFirewallAgent))]
public sealed class TestQubeFirewallAgentCommand : QubeNamesCmdlet
{
    /// <summary>Also reads each running qube's agent status (one bounded qvm-run read per qube).</summary>
    [Parameter]
    public SwitchParameter Deep { get; set; }

    protected override void ProcessRecord()
    {
        foreach (var name in VMName)
        {
            if (!TryEngine(() => Backend.GetInventory(), out var inventory)) continue;
            if (!TryEngine(() => AgentInstaller.Test(inventory, name), out var result)) continue;
            if (Deep && TryEngine(() => AgentInstaller.ReadStatus(Backend, inventory.Get(result.VMName)), out var status)) result = result with { Status = status };
            WriteObject(result);
        }
    }
}
