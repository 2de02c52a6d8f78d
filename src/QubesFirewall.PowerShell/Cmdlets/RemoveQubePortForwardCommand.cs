using System.Management.Automation;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.PowerShell.Cmdlets;

/// <summary>
/// Removes a declared port forward: rebuilds the script of every qube on its way without it (closing the
/// outermost hop first) and removes the feature last. Never "all": VMName and Port are mandatory.
/// </summary>
[Cmdlet(VerbsCommon.Remove, "QubePortForward", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High)]
[OutputType(typeof(PortForwardHopResult))]
public sealed class RemoveQubePortForwardCommand : AgentChangeCmdlet
{
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [Alias("Name")]
    [ArgumentCompleter(typeof(QubeNameCompleter))]
    [ValidateNotNullOrEmpty]
    public string VMName { get; set; } = "";

    [Parameter(Mandatory = true, Position = 1, ValueFromPipelineByPropertyName = true)]
    [Alias("LocalPort")]
    [ArgumentCompleter(typeof(PortForwardPortCompleter))]
    [ValidateRange(1, 65535)]
    public int Port { get; set; }

    [Parameter(ValueFromPipelineByPropertyName = true)]
    public ForwardProtocol Protocol { get; set; } = ForwardProtocol.Tcp;

    [Parameter]
    public SwitchParameter PassThru { get; set; }

    protected override void ProcessRecord()
    {
        PortForwardPlan Plan() => PortForwardPlanner.PlanRemove(Backend, VMName, Protocol, Port, ChangeOptions());
        // feature calls only: a halted qube on the way gets its keys too and applies them when it starts (Pending)
        if (TryEngine(Plan, out var first)) DeployPortForward(first, start: false, Plan, PassThru);
    }
}
