using System.Management.Automation;
using QubesFirewall.Engine;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.PowerShell.Cmdlets;

/// <summary>
/// Declares a port forward on the target qube (feature qubesfirewall.forward.&lt;proto&gt;.&lt;port&gt;) and
/// makes every network qube on the way carry it: one ShouldProcess per forward, whose text is the whole plan.
/// </summary>
[Cmdlet(VerbsCommon.Add, "QubePortForward", SupportsShouldProcess = true)]
[OutputType(typeof(PortForwardHopResult))]
public sealed class AddQubePortForwardCommand : QubeCmdlet
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

    /// <summary>Accept a disposable on the way, and skip the question about a port open to everyone.</summary>
    [Parameter]
    public SwitchParameter Force { get; set; }

    [Parameter]
    public SwitchParameter PassThru { get; set; }

    /// <summary>Start the halted qubes the change must reach (network qubes on the way, the qubes keeping the files), outermost first, instead of refusing them.</summary>
    [Parameter]
    public SwitchParameter Start { get; set; }

    /// <summary>Through the agent: set the features and return, without asking the qubes' agents whether they applied them.</summary>
    [Parameter]
    public SwitchParameter NoWait { get; set; }

    private TimeSpan AgentWait => NoWait ? TimeSpan.Zero : TimeSpan.FromSeconds(5);

    protected override void ProcessRecord()
    {
        if (!TryEngine(() => PortForward.Create(VMName, Protocol, Port, TargetPort, Type, AllowFrom, Interface,
                ExpireArgument.ToUnixTime(Expire, Now), Comment), out var forward)) return;
        PortForwardPlan Plan() => PortForwardPlanner.PlanAdd(Backend, forward, DeploymentOptions.For(Backend, Now, Force) with { AgentWait = AgentWait });
        if (!TryEngine(Plan, out var first) || StartWhatMustRun(first, Start, Plan) is not { } plan) return;
        foreach (var warning in plan.Warnings) WriteWarning(warning);
        var caption = plan.Operation == "Update" ? "Update port forward" : "Add port forward";
        if (!ShouldProcess(plan.Describe(), $"{caption} {plan.Target}?", caption))
        {
            ShowWhatIfDetails(() => PortForwardPlanner.Apply(Backend, plan));
            return;
        }
        if (plan.OpenToEveryone && plan.Operation != "Reapply" && !Force && !ShouldContinue(OpenQuestion(forward, plan), "Open a port to everyone?")) return;
        DeployPortForward(plan, Plan, PassThru);
    }

    private static string OpenQuestion(PortForward forward, PortForwardPlan plan) => forward.Type == ForwardType.External
        ? $"{forward.Text} has no -AllowFrom: anyone who can reach {plan.Hops[0]} on its outside network{(forward.Interface is null ? "s" : " " + forward.Interface)} (a public Wi-Fi, the whole LAN, the internet if it has a public address) can connect to {forward.VMName}. Continue?"
        : $"{forward.Text} has no -AllowFrom: every qube whose network qube is {plan.Hops[0]}{(forward.Interface is null ? "" : $" and everything arriving on its {forward.Interface}")} can connect to {forward.VMName}. Continue?";
}
