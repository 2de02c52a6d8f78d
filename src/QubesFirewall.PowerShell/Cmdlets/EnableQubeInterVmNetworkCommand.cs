using System.Management.Automation;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.PowerShell.Cmdlets;

/// <summary>
/// Lets one qube open connections to another behind the same network qube: declares the links (features
/// qubesfirewall.link.* of the source) and plans their three parts — the network qube's forward accept, the
/// destination's input accept, the source's own Qubes firewall rule. One ShouldProcess per source qube.
/// </summary>
[Cmdlet(VerbsLifecycle.Enable, "QubeInterVmNetwork", SupportsShouldProcess = true)]
[OutputType(typeof(QubeInterVmLink))]
public sealed class EnableQubeInterVmNetworkCommand : QubeCmdlet
{
    /// <summary>The source qube (binds from Get-Qube's Name).</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [Alias("Name", "VMName")]
    [ArgumentCompleter(typeof(QubeNameCompleter))]
    [ValidateNotNullOrEmpty]
    public string From { get; set; } = "";

    /// <summary>The destination qube.</summary>
    [Parameter(Mandatory = true, Position = 1, ValueFromPipelineByPropertyName = true)]
    [ArgumentCompleter(typeof(QubeNameCompleter))]
    [ValidateNotNullOrEmpty]
    public string To { get; set; } = "";

    /// <summary>Ports: numbers 1-65535 or ranges "N-M"; none = every port of the protocol.</summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    [Alias("RemotePort", "DstPorts")]
    [EmptyAsNull]
    public object[]? Port { get; set; }

    [Parameter(ValueFromPipelineByPropertyName = true)]
    public InterVmProtocol Protocol { get; set; } = InterVmProtocol.Tcp;

    /// <summary>Also the link back (To -> From), stored on To.</summary>
    [Parameter]
    public SwitchParameter Bidirectional { get; set; }

    /// <summary>Accept a disposable network qube or destination (its file is kept in its disposable template).</summary>
    [Parameter]
    public SwitchParameter Force { get; set; }

    [Parameter]
    public SwitchParameter PassThru { get; set; }

    /// <summary>Start the halted qubes the change must reach (the network qube, the destinations, the qubes keeping their files), outermost first, instead of refusing them.</summary>
    [Parameter]
    public SwitchParameter Start { get; set; }

    protected override void ProcessRecord()
    {
        if (!TryEngine(() => InterVmLink.Expand(From, To, Protocol, LinkPortArgument.Read(Port), Bidirectional), out var links)) return;
        InterVmLinkPlan Plan() => InterVmLinkPlanner.PlanEnable(Backend, links, InterVmLinkOptions.For(Backend, Now, Force));
        if (!TryEngine(Plan, out var first) || StartWhatMustRun(first, Start, Plan) is not { } plan) return;
        foreach (var warning in plan.Warnings) WriteWarning(warning);
        if (!ShouldProcess(plan.Describe(), $"Enable inter-qube link {plan.Target}?", "Enable inter-qube link"))
        {
            ShowWhatIfDetails(() => InterVmLinkPlanner.Apply(Backend, plan));
            return;
        }
        if (DeployLinks(plan) is null) return;
        if (PassThru) LinkOutput.Write(this, Backend, plan.Links, Now);
    }
}

/// <summary>Shared by the link cmdlets: -Port values and the objects -PassThru writes.</summary>
internal static class LinkPortArgument
{
    public static IReadOnlyList<LinkPorts> Read(object[]? values) =>
        values is null ? [] : values.Select(v => LinkPorts.FromArgument(v is PSObject p ? p.BaseObject : v)).ToList();
}

internal static class LinkOutput
{
    /// <summary>Writes the links as Get-QubeInterVmNetwork shows them now (re-read after the change).</summary>
    public static void Write(Cmdlet cmdlet, Engine.Backends.IQubesBackend backend, IReadOnlyList<InterVmLink> links, DateTimeOffset now)
    {
        var names = new HashSet<string>(links.Select(l => l.From + "\0" + l.FeatureName), StringComparer.Ordinal);
        var froms = new HashSet<string>(links.Select(l => l.From), StringComparer.Ordinal);
        foreach (var item in InterVmLinkPlanner.List(backend.GetInventory(), backend.ReadQubeFile, backend.GetFirewall, now, froms.Contains))
            if (names.Contains(item.From + "\0" + item.FeatureName)) cmdlet.WriteObject(item);
    }
}
