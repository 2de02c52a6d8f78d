using System.Management.Automation;
using QubesFirewall.Engine;
using QubesFirewall.Engine.Deployment;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.PowerShell.Cmdlets;

/// <summary>
/// Declares a port forward on the target qube (feature qubesfirewall.forward.&lt;proto&gt;.&lt;port&gt;) and
/// makes every network qube on the way carry it: one ShouldProcess per forward, whose text is the whole plan.
/// </summary>
[Cmdlet(VerbsCommon.Add, "QubePortForward", SupportsShouldProcess = true)]
[OutputType(typeof(PortForwardHopResult))]
public sealed class AddQubePortForwardCommand : AgentChangeCmdlet
{
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [Alias("Name")]
    [ArgumentCompleter(typeof(QubeNameCompleter))]
    [ValidateNotNullOrEmpty]
    public string VMName { get; set; } = "";

    /// <summary>The port opened on the network side; "080" binds as 80.</summary>
    [Parameter(Mandatory = true, Position = 1, ValueFromPipelineByPropertyName = true)]
    [Alias("LocalPort")]
    [ValidateRange(1, 65535)]
    public int Port { get; set; }

    [Parameter(ValueFromPipelineByPropertyName = true)]
    [EmptyAsNull]
    [ValidateRange(1, 65535)]
    public int? TargetPort { get; set; }

    [Parameter(ValueFromPipelineByPropertyName = true)]
    public ForwardProtocol Protocol { get; set; } = ForwardProtocol.Tcp;

    [Parameter(ValueFromPipelineByPropertyName = true)]
    public ForwardType Type { get; set; } = ForwardType.External;

    /// <summary>The source networks allowed; <c>Any</c> (alone) opens the port to everyone, which then asks at ConfirmImpact High.</summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    [Alias("RemoteAddress")]
    [EmptyAsNull]
    public string[]? AllowFrom { get; set; }

    [Parameter(ValueFromPipelineByPropertyName = true)]
    [EmptyAsNull]
    public string? Interface { get; set; }

    /// <summary>A DateTime, a TimeSpan from now, Unix seconds or "+SECONDS".</summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    [EmptyAsNull]
    public object? Expire { get; set; }

    [Parameter(ValueFromPipelineByPropertyName = true)]
    [Alias("Description")]
    [EmptyAsNull]
    public string? Comment { get; set; }

    [Parameter]
    public SwitchParameter PassThru { get; set; }

    protected override void ProcessRecord()
    {
        if (!TryEngine(() => PortForwardAllowFrom.Read(AllowFrom), out var allowFrom)) return;
        if (!TryEngine(() => PortForward.Create(VMName, Protocol, Port, TargetPort, Type, allowFrom.Sources, Interface,
                ExpireArgument.ToUnixTime(Expire, Now), Comment), out var forward)) return;
        // feature calls only: a disposable on the way keeps its own keys, a halted qube gets them too and applies them when it starts
        PortForwardPlan Plan() => PortForwardPlanner.PlanAdd(Backend, forward, ChangeOptions());
        if (!TryEngine(Plan, out var first)) return;
        var open = first.OpenToEveryone && first.Operation != PlanOperation.Reapply;
        if (open && !allowFrom.Given)
        {
            WriteError(ToErrorRecord(PortForwardAllowFrom.Required(forward, first)));
            return;
        }
        // Open to everyone: the plan's text says so, and it is asked as at ConfirmImpact High, so a script says -Confirm:$false knowingly.
        DeployPortForward(first, start: false, Plan, PassThru,
            confirmMore: plan => !open || ConfirmHighImpact(OpenWarning(forward, plan) + " Continue?", "Open a port to everyone?"),
            describe: plan => plan.Describe() + (open ? Environment.NewLine + OpenWarning(forward, plan) : ""));
    }

    private static string OpenWarning(PortForward forward, PortForwardPlan plan) => PortForwardAllowFrom.OpenWarning(forward, plan);
}
