using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.Engine.Network;

/// <summary>
/// One qube's place in the network (Get-QubeNetwork): its netvm chain, who enforces its rules (the audit's answer),
/// a summary of its rules, its addresses, and the port forwards, links and bindings that touch it. <see cref="Name"/>
/// binds to the -VMName (alias -Name) of the other cmdlets.
/// </summary>
public sealed record QubeNetworkNode
{
    public required string Name { get; init; }

    public QubeClass Class { get; init; }

    public PowerState State { get; init; }

    public string? Label { get; init; }

    /// <summary>The qube that gives it network (its netvm); null = no network.</summary>
    public string? NetVM { get; init; }

    /// <summary>The netvm chain upward: its netvm, that one's netvm, ... (sys-firewall, sys-net).</summary>
    public string[] NetVmChain { get; init; } = [];

    /// <summary>Levels below the top of its tree: 0 for sys-net and qubes without network, 1 for sys-firewall, ...</summary>
    public int Depth => NetVmChain.Length;

    /// <summary>The last qube of the chain, the one with the uplink (sys-net); null without network.</summary>
    public string? Uplink => NetVmChain.Length == 0 ? null : NetVmChain[^1];

    public bool ProvidesNetwork { get; init; }

    /// <summary>The qubes whose netvm it is, by name.</summary>
    public string[] Clients { get; init; } = [];

    public string? IP { get; init; }

    public string? IPv6 { get; init; }

    /// <summary>The network qube that enforces its Qubes firewall; null when nobody does (see <see cref="Enforcement"/>).</summary>
    public string? EnforcedBy { get; init; }

    /// <summary>Why its rules are, or are not, enforced (Test-QubeFirewall's words); null without network.</summary>
    public string? Enforcement { get; init; }

    /// <summary>The number of rules qubesd's Get shows.</summary>
    public int RuleCount { get; init; }

    /// <summary>The final catch-all (<c>action=drop</c>, <c>action=accept</c>); null when the list has none (qubesd then drops).</summary>
    public string? CatchAll { get; init; }

    /// <summary>True when the list lets everything through (accept rules up to a lasting accept-all, such as the default list).</summary>
    public bool OpenToAll { get; init; }

    /// <summary>Port forwards that end in this qube or cross it.</summary>
    public QubePortForward[] Forwards { get; init; } = [];

    /// <summary>Inter-qube links from or to this qube, or passed by it as their network qube.</summary>
    public InterVmLink[] Links { get; init; } = [];

    /// <summary>qubes.ConnectTCP bindings from or to this qube.</summary>
    public TcpBinding[] Bindings { get; init; } = [];

    /// <summary>Test-QubeFirewall's errors and warnings for this qube.</summary>
    public AuditFinding[] Problems { get; init; } = [];

    public override string ToString() => Name;
}
