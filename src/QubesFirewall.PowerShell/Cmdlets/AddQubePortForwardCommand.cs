using System.Management.Automation;
using QubesFirewall.Engine;
using QubesFirewall.Engine.Deployment;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.PowerShell.Cmdlets;

/// <summary>
/// Declares a port forward on the target qube (feature qubesfirewall.forward.&lt;proto&gt;.&lt;port&gt;) and
/// makes every network qube on the way carry it. The forwards of one pipeline are one change: one ShouldProcess, whose text is
/// the whole plan, one rollback (a forward opened to everyone is asked about on its own, as it comes).
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
    [ValidateOptionalPort]
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

    // the forwards of the pipeline, checked one by one as they come (each record's error at once); deployed as one change at its end
    private readonly List<(PortForward Forward, bool Open)> _accepted = [];
    private readonly List<PortForwardPlan> _checked = [];

    protected override void ProcessRecord()
    {
        if (!TryEngine(() => PortForwardAllowFrom.Read(AllowFrom), out var allowFrom)) return;
        if (!TryEngine(() => PortForward.Create(VMName, Protocol, Port, TargetPort, Type, allowFrom.Sources, Interface,
                ExpireArgument.ToUnixTime(Expire, Now), Comment), out var forward)) return;
        // the same forward given again in the pipeline replaces the earlier one, as an Add of a declared forward updates it
        var again = _accepted.FindIndex(a => a.Forward.VMName == forward.VMName && a.Forward.FeatureName == forward.FeatureName);
        if (again >= 0)
        {
            WriteWarning($"{forward.Text}: {_accepted[again].Forward.Text} was given before in this pipeline; the later one is kept.");
            _accepted.RemoveAt(again);
            _checked.RemoveAt(again);
        }
        // checked as a single Add checks it, and against the forwards before it (one port per hop); feature calls only: a disposable on
        // the way keeps its own keys, a halted qube gets them too and applies them when it starts
        // (the source firewalls of an internal forward are read once, by the plan at the end, whose warnings are the ones shown)
        if (!TryEngine(() => PortForwardPlanner.Check(Backend.GetInventory(), forward, ChangeOptions(), _checked), out var plan)) return;
        var open = plan.OpenToEveryone && plan.Operation != PlanOperation.Reapply;
        if (open && !allowFrom.Given)
        {
            WriteError(ToErrorRecord(PortForwardAllowFrom.Required(forward, plan)));
            return;
        }
        // Open to everyone: asked for this forward, as at ConfirmImpact High, so a script says -Confirm:$false knowingly (not under
        // -WhatIf, which shows it in the plan); the plan's text says so too.
        if (open && !WhatIfRequested && !ConfirmHighImpact(OpenWarning(forward, plan) + " Continue?", "Open a port to everyone?")) return;
        _accepted.Add((forward, open));
        _checked.Add(plan);
    }

    /// <summary>The forwards of the pipeline as one change: one plan (each qube's keys written once), one ShouldProcess, one rollback.</summary>
    protected override void EndProcessing()
    {
        if (_accepted.Count > 0)
        {
            var forwards = _accepted.Select(a => a.Forward).ToList();
            PortForwardPlan Plan() => PortForwardPlanner.PlanAdd(Backend, forwards, ChangeOptions());
            if (TryEngine(Plan, out var first))
                DeployPortForward(first, start: false, Plan, PassThru, describe: plan => plan.Describe() + OpenWarnings(plan));
        }
        base.EndProcessing();
    }

    /// <summary>The warning of each forward of the plan opened to everyone, each on its own line.</summary>
    private string OpenWarnings(PortForwardPlan plan) => string.Concat(
        (plan.Members.Count > 1 ? plan.Members : [plan]).Where(m => m.Forward is { } f && _accepted.Any(a => a.Open && a.Forward.FeatureName == f.FeatureName && a.Forward.VMName == f.VMName))
            .Select(m => Environment.NewLine + OpenWarning(m.Forward!, m)));

    private static string OpenWarning(PortForward forward, PortForwardPlan plan) => PortForwardAllowFrom.OpenWarning(forward, plan);
}
