using System.Management.Automation;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.PowerShell.Cmdlets;

/// <summary>
/// What Enable- and Disable-QubeInterVmNetwork share: the parameters that name a set of links, and the
/// way a plan is made (feature calls and the source's firewall edit; halted qubes apply their keys when they start),
/// shown (-WhatIf) and deployed. The links of one pipeline are one change.
/// </summary>
public abstract class InterVmLinkCmdlet : AgentChangeCmdlet
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

    /// <summary>Ports: numbers 1-65535, ranges "N-M" or "all"; none = every port of the protocol.</summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    [Alias("RemotePort", "DstPorts")]
    [EmptyAsNull]
    public object[]? Port { get; set; }

    [Parameter(ValueFromPipelineByPropertyName = true)]
    public InterVmProtocol Protocol { get; set; } = InterVmProtocol.Tcp;

    /// <summary>Also the link back (To -> From), stored on To.</summary>
    [Parameter]
    public SwitchParameter Bidirectional { get; set; }

    [Parameter]
    public SwitchParameter PassThru { get; set; }

    // the links of the pipeline, checked record by record as they come (each record's error at once); one change at its end
    private readonly List<InterVmLink> _links = [];

    /// <summary>What the cmdlet checks of a record's links before they join the change (throws what it refuses).</summary>
    protected abstract void Check(QubesInventory inventory, IReadOnlyList<InterVmLink> links);

    /// <summary>Plans the links of the pipeline as one change.</summary>
    protected abstract InterVmLinkPlan Plan(IReadOnlyList<InterVmLink> links);

    /// <summary>What -PassThru writes once the change is deployed.</summary>
    protected abstract void WriteResult(InterVmLinkPlan plan, IReadOnlyList<PortForwardHopResult> hops);

    protected override void ProcessRecord()
    {
        if (!TryEngine(() => InterVmLink.Expand(From, To, Protocol, Read(Port), Bidirectional), out var links)) return;
        if (!TryEngine(() => Check(Backend.GetInventory(), links))) return;
        // the same link named again in the pipeline is one link
        foreach (var link in links)
        {
            _links.RemoveAll(l => l.From == link.From && l.FeatureName == link.FeatureName);
            _links.Add(link);
        }
    }

    /// <summary>
    /// The links of the pipeline, planned as one change and deployed through <see cref="QubeCmdlet.Deploy{TPlan,TResult}"/>:
    /// one ShouldProcess, one rollback, each qube's keys written once; -PassThru writes what <see cref="WriteResult"/> does.
    /// </summary>
    protected override void EndProcessing()
    {
        if (_links.Count > 0) PlanAndDeploy();
        base.EndProcessing();
    }

    private void PlanAndDeploy()
    {
        var links = _links.ToList();
        InterVmLinkPlan Again() => Plan(links);
        if (!TryEngine(Again, out var first)) return;
        InterVmLinkPlan deployed = first;
        if (Deploy(first, start: false, Again, (plan, options, _) => InterVmLinkPlanner.Apply(Backend, deployed = plan, options), r => r.Failure) is not { } result) return;
        if (result.Failure is null) WriteVerbose($"{deployed.Operation}: {deployed.Target}: done ({deployed.Steps.Count} steps).");
        if (PassThru) WriteResult(deployed, result.Hops);
    }

    private static IReadOnlyList<LinkPorts> Read(object[]? values) =>
        values is null ? [] : values.Select(v => LinkPorts.FromArgument(v is PSObject p ? p.BaseObject : v)).ToList();
}
