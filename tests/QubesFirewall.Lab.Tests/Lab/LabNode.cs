namespace QubesFirewall.Lab.Tests.Lab;

public enum LabNodeKind
{
    /// <summary>A qube (app qube or network qube).</summary>
    Qube,

    /// <summary>A host on the physical LAN.</summary>
    Outside,

    /// <summary>The LAN itself: a bridge plus the LAN router/DNS address (no forwarding).</summary>
    Lan,
}

/// <summary>Everything the lab computed for one node: namespace, addresses, interfaces, relations.</summary>
public sealed class LabNode
{
    internal LabNode(string name, LabNodeKind kind, string ns)
    {
        Name = name;
        Kind = kind;
        Namespace = ns;
    }

    public string Name { get; }

    public LabNodeKind Kind { get; }

    /// <summary>The network namespace (<c>ip netns exec &lt;Namespace&gt; ...</c>).</summary>
    public string Namespace { get; }

    /// <summary>The qube's description, for qubes.</summary>
    public LabQube? Spec { get; internal set; }

    public bool ProvidesNetwork => Spec?.ProvidesNetwork ?? false;

    /// <summary>The qube's IPv4 address (10.137.x.y), or the host's LAN address for outside hosts, or the LAN router for the lan node.</summary>
    public string? Ip { get; internal set; }

    /// <summary>IPv6 address when the qube has one (ipv6 feature), the host's LAN IPv6 address for outside hosts.</summary>
    public string? Ip6 { get; internal set; }

    /// <summary>Its network qube.</summary>
    public LabNode? NetVm { get; internal set; }

    /// <summary>Qubes whose netvm this is, in topology order.</summary>
    public List<LabNode> Clients { get; } = [];

    /// <summary>Xen-like domain id used for its vif name in its netvm.</summary>
    public int DomId => Spec?.Qid ?? 0;

    /// <summary>Name of the interface toward this qube in its netvm (<c>vif&lt;domid&gt;.0</c>, group 2).</summary>
    public string? Vif => NetVm is null ? null : $"vif{DomId}.0";

    /// <summary>MAC of the qube's eth0 (the netvm side of every vif is fe:ff:ff:ff:ff:ff, as in Qubes).</summary>
    public string Mac => $"00:16:3e:5e:{(DomId >> 8) & 0xff:x2}:{DomId & 0xff:x2}";

    /// <summary>For network qubes without netvm: the physical NIC (group 0) and its LAN addresses.</summary>
    public string? PhysicalNic { get; internal set; }

    public string? LanAddress { get; internal set; }

    public string? LanAddress6 { get; internal set; }

    /// <summary>The interface through which this node reaches the rest of the world: eth0 (group 1) for qubes with a netvm, the physical NIC for sys-net.</summary>
    public string? Uplink => NetVm is not null ? "eth0" : PhysicalNic ?? (Kind == LabNodeKind.Outside ? "eth0" : null);

    /// <summary>The <c>ipv6</c> feature as qubesd checks it with netvm inheritance (features.check_with_netvm).</summary>
    public bool Ipv6Feature { get; internal set; }

    /// <summary>True when the qube loads the IPv6 ruleset (qubes-iptables: it has /qubes-ip6 or /qubes-netvm-gateway6).</summary>
    public bool Ipv6Enabled => Kind == LabNodeKind.Qube && (Spec!.NetVm is not null || ProvidesNetwork) && Ipv6Feature;

    /// <summary>Whether the qubes-firewall service (agent stand-in) runs here.</summary>
    public bool RunsFirewallService => ProvidesNetwork && (Spec?.FirewallService ?? true);

    /// <summary>The resolvers in this qube's resolv.conf: the LAN router for sys-net, 10.139.1.1/10.139.1.2 (Qubes' virtual DNS) elsewhere.</summary>
    public IReadOnlyList<string> Resolvers { get; internal set; } = [];

    /// <summary>The per-qube stand-in for /rw/config.</summary>
    public string RwConfigDir { get; internal set; } = "";

    public override string ToString() => $"{Name} ({Namespace}{(Ip is null ? "" : ", " + Ip)})";
}
