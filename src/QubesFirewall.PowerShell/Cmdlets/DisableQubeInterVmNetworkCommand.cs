using System.Management.Automation;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.PowerShell.Cmdlets;

/// <summary>
/// Removes exactly the links the same parameters enabled: the source's firewall rule (unless a remaining link
/// needs it), the accepts in the network qube and the destination, then the declarations. Never "all":
/// From and To are mandatory; without -Port it is the all-ports link.
/// </summary>
[Cmdlet(VerbsLifecycle.Disable, "QubeInterVmNetwork", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High)]
[OutputType(typeof(PortForwardHopResult))]
public sealed class DisableQubeInterVmNetworkCommand : QubeCmdlet
{
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [Alias("Name", "VMName")]
    [ArgumentCompleter(typeof(QubeNameCompleter))]
    [ValidateNotNullOrEmpty]
    public string From { get; set; } = "";

    [Parameter(Mandatory = true, Position = 1, ValueFromPipelineByPropertyName = true)]
    [ArgumentCompleter(typeof(QubeNameCompleter))]
    [ValidateNotNullOrEmpty]
    public string To { get; set; } = "";

    /// <summary>Ports as given to Enable ("all" or none: the all-ports link).</summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    [Alias("RemotePort", "DstPorts")]
    [EmptyAsNull]
    public object[]? Port { get; set; }

    [Parameter(ValueFromPipelineByPropertyName = true)]
    public InterVmProtocol Protocol { get; set; } = InterVmProtocol.Tcp;

    /// <summary>Also the link back (To -> From).</summary>
    [Parameter]
    public SwitchParameter Bidirectional { get; set; }

    [Parameter]
    public SwitchParameter PassThru { get; set; }

    /// <summary>Start the halted qubes the change must reach (the network qube, the destinations, the qubes keeping their files), outermost first, instead of refusing them.</summary>
    [Parameter]
    public SwitchParameter Start { get; set; }

    protected override void ProcessRecord()
    {
        if (!TryEngine(() => InterVmLink.Expand(From, To, Protocol, LinkPortArgument.Read(Port), Bidirectional), out var links)) return;
        InterVmLinkPlan Plan() => InterVmLinkPlanner.PlanDisable(Backend, links, InterVmLinkOptions.For(Backend, Now));
        if (!TryEngine(Plan, out var first) || StartWhatMustRun(first, Start, Plan) is not { } plan) return;
        foreach (var warning in plan.Warnings) WriteWarning(warning);
        if (!ShouldProcess(plan.Describe(), $"Disable inter-qube link {plan.Target} and remove its rules?", "Disable inter-qube link"))
        {
            ShowWhatIfDetails(() => InterVmLinkPlanner.Apply(Backend, plan));
            return;
        }
        if (DeployLinks(plan) is { } hops && PassThru) WriteObject(hops, enumerateCollection: true);
    }
}
