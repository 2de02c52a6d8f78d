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
public sealed class RemoveQubePortForwardCommand : QubeCmdlet
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
        if (!TryEngine(() => PortForwardPlanner.PlanRemove(Backend, VMName, Protocol, Port, PortForwardOptions.For(Backend, Now)), out var plan)) return;
        foreach (var warning in plan.Warnings) WriteWarning(warning);
        if (!ShouldProcess(plan.Describe(), $"Remove port forward {plan.Target} and its rules in {string.Join(", ", plan.Hops.Append(plan.VMName))}?", "Remove port forward"))
        {
            ShowWhatIfDetails(() => PortForwardPlanner.Apply(Backend, plan));
            return;
        }
        var result = PortForwardPlanner.Apply(Backend, plan);
        if (PassThru) WriteObject(result.Hops, enumerateCollection: true);
        if (result.Failure is not null) WriteError(ToErrorRecord(result.Failure));
        else WriteVerbose($"Remove: {plan.Target}: done ({result.Hops.Count} qubes).");
    }
}
