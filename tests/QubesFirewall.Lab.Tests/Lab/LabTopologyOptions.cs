using System.Text.RegularExpressions;

namespace QubesFirewall.Lab.Tests.Lab;

/// <summary>
/// One qube of a lab topology, described the way qubes.xml does.
/// </summary>
/// <param name="Name">Qube name (also the node name used by every lab method).</param>
/// <param name="Qid">qid: the IPv4 address is 10.137.x.y from it, the IPv6 one fd09:24ef:4179::a89:&lt;qid hex&gt;.</param>
/// <param name="NetVm">Name of its network qube, or null (no network; a network qube without netvm owns the physical NIC).</param>
/// <param name="ProvidesNetwork">True for network qubes (sys-net, sys-firewall, VPN/proxy qubes).</param>
/// <param name="Ipv6">The qube's <c>ipv6</c> feature: true = "1", false = "" (opt out), null = inherited from its netvm
/// (for a network qube without netvm: <see cref="LabTopologyOptions.Ipv6"/>).</param>
/// <param name="FirewallService">Whether the qubes-firewall service (the agent stand-in) runs in this qube;
/// null = the Qubes default (every network qube runs it).</param>
public sealed record LabQube(
    string Name,
    int Qid,
    string? NetVm,
    bool ProvidesNetwork = false,
    bool? Ipv6 = null,
    bool? FirewallService = null);

/// <summary>A host on the physical LAN that sys-net is plugged into (not a qube).</summary>
public sealed record LabOutsideHost(string Name, string Address, string Address6);

/// <summary>
/// Declarative description of a lab: the qubes (name, qid, netvm, provides_network), the LAN hosts and a few switches.
/// Tests derive variants with <c>with</c>: <c>LabTopologyOptions.Default with { Ipv6 = true }</c>.
/// </summary>
public sealed record LabTopologyOptions
{
    public required IReadOnlyList<LabQube> Qubes { get; init; }

    /// <summary>Hosts on the LAN (each in its own namespace, on one bridge with the physical NIC(s) of the network qubes without netvm).</summary>
    public IReadOnlyList<LabOutsideHost> OutsideHosts { get; init; } =
    [
        new("outside", "192.168.1.50", "2001:db8:1::50"),
        new("outside2", "192.168.1.60", "2001:db8:1::60"),
    ];

    /// <summary>The <c>ipv6</c> feature of the network qube(s) without netvm (inherited downstream unless a qube says otherwise).</summary>
    public bool Ipv6 { get; init; }

    /// <summary>Name of the physical NIC in network qubes without netvm (interface group 0).</summary>
    public string PhysicalNic { get; init; } = "ens6";

    /// <summary>LAN addresses of the physical NICs: the first network qube without netvm gets the first one, and so on.</summary>
    public IReadOnlyList<string> LanAddresses { get; init; } = ["192.168.1.10", "192.168.1.11", "192.168.1.12"];

    public IReadOnlyList<string> LanAddresses6 { get; init; } = ["2001:db8:1::10", "2001:db8:1::11", "2001:db8:1::12"];

    public int LanPrefixLength { get; init; } = 24;

    public int LanPrefixLength6 { get; init; } = 64;

    /// <summary>The LAN's router and DNS resolver (the <c>lan</c> node, which does not forward): sys-net's default route and its resolv.conf.</summary>
    public string LanRouter { get; init; } = "192.168.1.1";

    public string LanRouter6 { get; init; } = "2001:db8:1::1";

    /// <summary>
    /// Give outside hosts a route to the qube networks (10.137/16, 10.138/16, fd09:24ef:4179::/64) through sys-net,
    /// as any attacker on the LAN could: "outside cannot reach a qube" then proves the firewall, not a missing route.
    /// </summary>
    public bool OutsideRoutesToQubes { get; init; } = true;

    /// <summary>Name resolution for <c>dsthost=</c> rules in the agent stand-in (the lab never asks a real resolver).
    /// A name not listed fails to resolve: as in Qubes, that client then rejects everything.</summary>
    public IReadOnlyDictionary<string, IReadOnlyList<string>> Hosts { get; init; } =
        new Dictionary<string, IReadOnlyList<string>>(StringComparer.OrdinalIgnoreCase);

    /// <summary>Load the agent stand-in (every client: default firewall = accept) in each network qube that runs the service when the lab starts and on Reset.</summary>
    public bool StartFirewallAgents { get; init; } = true;

    /// <summary>
    /// The sample layout: sys-net (qid 2, ens6 on the LAN) → sys-firewall (3) → work (5), personal (6), untrusted (7)
    /// and the VPN/proxy-like sys-vpn (4), which serves vpn-app (8).
    /// </summary>
    public static LabTopologyOptions Default { get; } = new()
    {
        Qubes =
        [
            new("sys-net", 2, null, ProvidesNetwork: true),
            new("sys-firewall", 3, "sys-net", ProvidesNetwork: true),
            new("sys-vpn", 4, "sys-firewall", ProvidesNetwork: true),
            new("work", 5, "sys-firewall"),
            new("personal", 6, "sys-firewall"),
            new("untrusted", 7, "sys-firewall"),
            new("vpn-app", 8, "sys-vpn"),
        ],
    };

    private static readonly Regex NamePattern = new("^[a-zA-Z][a-zA-Z0-9_.-]{0,30}$", RegexOptions.CultureInvariant);

    internal void Validate()
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var name in Qubes.Select(q => q.Name).Concat(OutsideHosts.Select(h => h.Name)).Append(LabTopology.LanNode))
        {
            if (!NamePattern.IsMatch(name))
            {
                throw new ArgumentException($"lab node name '{name}' is not a valid qube name");
            }

            if (!names.Add(name))
            {
                throw new ArgumentException($"lab node name '{name}' is used twice");
            }
        }

        var qids = new HashSet<int>();
        foreach (var q in Qubes)
        {
            if (q.Qid is < 1 or > 8000 || !qids.Add(q.Qid))
            {
                throw new ArgumentException($"qube '{q.Name}': qid {q.Qid} is out of range or used twice");
            }

            if (q.NetVm is not null)
            {
                var netvm = Qubes.FirstOrDefault(n => n.Name == q.NetVm)
                    ?? throw new ArgumentException($"qube '{q.Name}': netvm '{q.NetVm}' is not in the topology");
                if (!netvm.ProvidesNetwork)
                {
                    throw new ArgumentException($"qube '{q.Name}': netvm '{q.NetVm}' does not provide network");
                }
            }

            // loops
            var seen = new HashSet<string>();
            for (var cur = q; cur?.NetVm is not null; cur = Qubes.First(n => n.Name == cur.NetVm))
            {
                if (!seen.Add(cur.Name))
                {
                    throw new ArgumentException($"qube '{q.Name}': netvm loop");
                }
            }
        }

        var roots = Qubes.Count(q => q.ProvidesNetwork && q.NetVm is null);
        if (roots > LanAddresses.Count || roots > LanAddresses6.Count)
        {
            throw new ArgumentException("more network qubes without netvm than LAN addresses");
        }

        if (PhysicalNic.Length > 15)
        {
            throw new ArgumentException("interface names are limited to 15 characters");
        }
    }
}
