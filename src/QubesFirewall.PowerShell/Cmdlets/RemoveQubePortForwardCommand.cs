using System.Management.Automation;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.PowerShell.Cmdlets;

/// <summary>
/// Removes a declared port forward: rebuilds the script of every qube on its way without it (closing the
/// outermost hop first) and removes the feature last. Never "all": VMName and Port are mandatory. The forwards of one
/// pipeline are one change: one ShouldProcess, one rollback, each qube's keys written once.
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

    // the forwards of the pipeline, checked one by one as they come (each record's error at once); removed as one change at its end
    private readonly List<(string VMName, ForwardProtocol Protocol, int Port)> _accepted = [];

    protected override void ProcessRecord()
    {
        // feature calls only: a halted qube on the way gets its keys too and applies them when it starts (Pending)
        if (!TryEngine(() => PortForwardPlanner.CheckRemove(Backend.GetInventory(), VMName, Protocol, Port), out var plan)) return;
        var forward = (plan.VMName, Protocol, Port);
        if (!_accepted.Contains(forward)) _accepted.Add(forward);
    }

    /// <summary>The forwards of the pipeline as one change: one plan (each qube's keys written once), one ShouldProcess, one rollback.</summary>
    protected override void EndProcessing()
    {
        if (_accepted.Count > 0)
        {
            PortForwardPlan Plan() => PortForwardPlanner.PlanRemove(Backend, _accepted, ChangeOptions());
            if (TryEngine(Plan, out var first)) DeployPortForward(first, start: false, Plan, PassThru);
        }
        base.EndProcessing();
    }
}
