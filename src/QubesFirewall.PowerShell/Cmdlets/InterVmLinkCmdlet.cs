using System.Management.Automation;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.PowerShell.Cmdlets;

/// <summary>
/// What Enable- and Disable-QubeInterVmNetwork share: the parameters that name a set of links, and the
/// way a plan is made (feature calls and the source's firewall edit; halted qubes apply their keys when they start),
/// shown (-WhatIf) and deployed.
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

    /// <summary>
    /// Plans the links the parameters name with <paramref name="planner"/> and deploys the plan through
    /// <see cref="QubeCmdlet.Deploy{TPlan,TResult}"/>. Returns the plan and one result per qube, or null when nothing was deployed.
    /// </summary>
    protected (InterVmLinkPlan Plan, IReadOnlyList<PortForwardHopResult> Hops)? PlanAndDeploy(Func<IReadOnlyList<InterVmLink>, InterVmLinkPlan> planner)
    {
        if (!TryEngine(() => InterVmLink.Expand(From, To, Protocol, Read(Port), Bidirectional), out var links)) return null;
        InterVmLinkPlan Plan() => planner(links);
        if (!TryEngine(Plan, out var first)) return null;
        InterVmLinkPlan deployed = first;
        if (Deploy(first, start: false, Plan, (plan, options, _) => InterVmLinkPlanner.Apply(Backend, deployed = plan, options), r => r.Failure) is not { } result) return null;
        if (result.Failure is null) WriteVerbose($"{deployed.Operation}: {deployed.Target}: done ({deployed.Steps.Count} steps).");
        return (deployed, result.Hops);
    }

    private static IReadOnlyList<LinkPorts> Read(object[]? values) =>
        values is null ? [] : values.Select(v => LinkPorts.FromArgument(v is PSObject p ? p.BaseObject : v)).ToList();
}
