using System.Management.Automation;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.PowerShell.Cmdlets;

/// <summary>
/// Removes a declared qubes.ConnectTCP binding: its policy line first, then the client's listener, the
/// feature last. Never "all": From, To and Port are mandatory.
/// </summary>
[Cmdlet(VerbsCommon.Remove, "QubeTcpBinding", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High)]
[OutputType(typeof(QubeTcpBinding))]
public sealed class RemoveQubeTcpBindingCommand : QubeCmdlet
{
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [Alias("Name", "VMName")]
    [ArgumentCompleter(typeof(QubeNameCompleter))]
    [ValidateNotNullOrEmpty]
    public string From { get; set; } = "";

    [Parameter(Mandatory = true, Position = 1, ValueFromPipelineByPropertyName = true)]
    [ArgumentCompleter(typeof(TcpBindingCompleter))]
    [ValidateNotNullOrEmpty]
    public string To { get; set; } = "";

    [Parameter(Mandatory = true, Position = 2, ValueFromPipelineByPropertyName = true)]
    [ArgumentCompleter(typeof(TcpBindingCompleter))]
    [ValidateRange(1, 65535)]
    public int Port { get; set; }

    [Parameter]
    public SwitchParameter PassThru { get; set; }

    /// <summary>Start the qube keeping the client's rc.local when it is halted, instead of refusing (or, when removing, leaving its listener to the next change).</summary>
    [Parameter]
    public SwitchParameter Start { get; set; }

    protected override void ProcessRecord()
    {
        TcpBindingPlan Plan() => TcpBindingPlanner.PlanRemove(Backend, From, To, Port, DeploymentOptions.For(Backend));
        if (!TryEngine(Plan, out var first)
            || Deploy(first, Start, Plan, (plan, options, again) => TcpBindingPlanner.Apply(Backend, plan, options, again), r => r.Failure) is not { } result) return;
        foreach (var change in result.Changes) WriteVerbose(change.Describe());
        if (result.Failure is not null) return;
        WriteVerbose($"Remove: {result.Plan!.Target}: done ({result.Done} change(s)).");
        if (PassThru && result.Plan.Binding is { } removed) WriteObject(new QubeTcpBinding(removed));
    }
}
