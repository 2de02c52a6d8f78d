using System.Management.Automation;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.PowerShell.Cmdlets;

/// <summary>
/// Declares a qubes.ConnectTCP binding on the client qube (feature qubesfirewall.tcp.&lt;To&gt;.&lt;Port&gt;), allows it in
/// dom0's policy file and, with -Permanent, makes the client listen on 127.0.0.1:LocalPort from boot on.
/// One ShouldProcess per binding, whose text is the whole plan.
/// </summary>
[Cmdlet(VerbsCommon.Add, "QubeTcpBinding", SupportsShouldProcess = true)]
[OutputType(typeof(QubeTcpBinding))]
public sealed class AddQubeTcpBindingCommand : QubeCmdlet
{
    /// <summary>The client qube.</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [Alias("Name", "VMName")]
    [ArgumentCompleter(typeof(QubeNameCompleter))]
    [ValidateNotNullOrEmpty]
    public string From { get; set; } = "";

    /// <summary>The qube whose port the client reaches.</summary>
    [Parameter(Mandatory = true, Position = 1, ValueFromPipelineByPropertyName = true)]
    [ArgumentCompleter(typeof(QubeNameCompleter))]
    [ValidateNotNullOrEmpty]
    public string To { get; set; } = "";

    /// <summary>The TCP port in the target.</summary>
    [Parameter(Mandatory = true, Position = 2, ValueFromPipelineByPropertyName = true)]
    [ValidateRange(1, 65535)]
    public int Port { get; set; }

    /// <summary>The port the client listens on (127.0.0.1); default: Port.</summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    [EmptyAsNull]
    [ValidateOptionalPort]
    public int? LocalPort { get; set; }

    /// <summary>Listen in the client from boot on (socket unit from its rc.local managed block).</summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    public SwitchParameter Permanent { get; set; }

    [Parameter]
    public SwitchParameter PassThru { get; set; }

    /// <summary>Start the qube keeping the client's rc.local when it is halted, instead of refusing (or, when removing, leaving its listener to the next change).</summary>
    [Parameter]
    public SwitchParameter Start { get; set; }

    protected override void ProcessRecord()
    {
        if (!TryEngine(() => TcpBinding.Create(From, To, Port, LocalPort, Permanent), out var binding)) return;
        TcpBindingPlan Plan() => TcpBindingPlanner.PlanAdd(Backend, binding, DeploymentOptions.For(Backend));
        if (!TryEngine(Plan, out var first)) return;
        foreach (var note in first.Notes) WriteVerbose(note);
        if (Deploy(first, Start, Plan, (plan, options, again) => TcpBindingPlanner.Apply(Backend, plan, options, again), r => r.Failure) is not { } result) return;
        foreach (var change in result.Changes) WriteVerbose(change.Describe());
        if (result.Failure is not null) return;
        WriteVerbose($"{result.Plan!.Operation}: {result.Plan.Target}: done ({result.Done} change(s){(result.Run is { Executed: false } ? "; the listener script was recorded, not run" : "")}).");
        if (PassThru) WriteObject(new QubeTcpBinding(binding));
    }
}
