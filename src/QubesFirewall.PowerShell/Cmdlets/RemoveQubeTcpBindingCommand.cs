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

    protected override void ProcessRecord()
    {
        if (!TryEngine(() => TcpBindingPlanner.PlanRemove(Backend, From, To, Port, TcpBindingOptions.For(Backend)), out var plan)) return;
        foreach (var warning in plan.Warnings) WriteWarning(warning);
        if (!ShouldProcess(plan.Describe(), $"Remove qubes.ConnectTCP binding {plan.Target}: its dom0 policy line{(plan.Binding?.Permanent != false ? ", the listener in " + plan.From : "")} and its feature?", "Remove qubes.ConnectTCP binding"))
        {
            ShowWhatIfDetails(() => TcpBindingPlanner.Apply(Backend, plan));
            return;
        }
        var result = TcpBindingPlanner.Apply(Backend, plan);
        if (result.Failure is not null)
        {
            WriteError(ToErrorRecord(result.Failure));
            return;
        }
        WriteVerbose($"Remove: {plan.Target}: done ({result.Done.Count} change(s)).");
        if (PassThru && plan.Binding is { } removed) WriteObject(new QubeTcpBinding(removed));
    }
}
