using System.Globalization;

namespace QubesFirewall.Engine.Model;

/// <summary>How traffic of a forward is recognised when it enters a hop.</summary>
public enum HopIngressKind
{
    /// <summary>The first hop of an external forward: any interface but <c>vif*</c> and <c>lo</c> (the physical NICs of sys-net, whatever their names).</summary>
    OutsideInterfaces,

    /// <summary>A named interface (<c>-Interface</c>) of the first hop.</summary>
    NamedInterface,

    /// <summary>The hop's uplink <c>eth0</c>, interface group 1, coming from the previous hop.</summary>
    Uplink,

    /// <summary>The hop's client qubes: the <c>vif*</c> interfaces, group 2 (internal forwards).</summary>
    Clients,
}

/// <summary>
/// One network qube a forward passes through, with what it does there: traffic arriving as
/// <see cref="Ingress"/>, addressed to this qube (<see cref="LocalAddress"/>, or any local address for
/// traffic from outside), on <see cref="PortForward.Port"/>, is translated to <see cref="NextAddress"/>
/// (and, at the last hop, to the target port) and let through. <see cref="LocalAddress6"/> and
/// <see cref="NextAddress6"/> are the IPv6 counterparts, set only when the whole chain has IPv6
/// (<see cref="NetworkChain.HasIPv6"/>); the IPv6 rules then translate to the next hop's IPv6 address.
/// </summary>
public sealed record ChainHop(Qube Qube, int Index, HopIngressKind Ingress, string? Interface, string? LocalAddress, string NextAddress, bool IsLast,
    string? LocalAddress6 = null, string? NextAddress6 = null)
{
    public string Name => Qube.Name;
}

/// <summary>
/// The network qubes between a forward's entry point and its target, outermost first:
/// sys-net -> sys-firewall -> work for an external forward to work; sys-firewall -> work for an internal one.
/// </summary>
public sealed record NetworkChain(PortForward Forward, Qube Target, IReadOnlyList<ChainHop> Hops)
{
    public IEnumerable<string> HopNames => Hops.Select(h => h.Name);

    /// <summary>The hop names then the target: <c>sys-net -> sys-firewall -> work</c>.</summary>
    public string Path => string.Join(" -> ", HopNames.Append(Target.Name));

    /// <summary>
    /// True when every qube of the chain, target included, has an IPv6 address (the <c>ipv6</c> feature is
    /// on for each of them): then each has the <c>ip6 qubes</c> table with its custom chains, and each hop
    /// routes IPv6 to the next, so the forward is generated for IPv6 too. Otherwise it is IPv4 only.
    /// </summary>
    public bool HasIPv6 => Target.IPv6 is not null && Hops.All(h => h.NextAddress6 is not null);

    /// <summary>The qubes of the chain without IPv6 (hops then target): why <see cref="HasIPv6"/> is false.</summary>
    public IReadOnlyList<Qube> WithoutIPv6 => Hops.Select(h => h.Qube).Append(Target).Where(q => q.IPv6 is null).ToList();

    /// <summary>
    /// Resolves the chain of a forward from the inventory. Refuses, with a specific error: an unknown
    /// target, a target without network, a netvm that does not exist, a loop, a Whonix gateway on the
    /// way (or as target), a Qubes release before R4.2 and, when <paramref name="requireRunning"/>
    /// (the live backend), a halted hop.
    /// </summary>
    public static NetworkChain Resolve(QubesInventory inventory, PortForward forward, bool requireRunning = false) =>
        Resolve(inventory, forward, requireRunning, checks: true);

    /// <summary>
    /// The chain as the netvm properties give it, without the Whonix, release and power checks: used to
    /// find the qubes a forward that is being removed crossed, whatever they are now.
    /// </summary>
    public static NetworkChain ResolveStructure(QubesInventory inventory, PortForward forward) =>
        Resolve(inventory, forward, requireRunning: false, checks: false);

    private static NetworkChain Resolve(QubesInventory inventory, PortForward forward, bool requireRunning, bool checks)
    {
        var target = inventory.Get(forward.VMName);
        if (target.Class is QubeClass.AdminVM or QubeClass.RemoteVM)
            throw new QubesFirewallException(ErrorIds.NoNetVM, FailureKind.InvalidOperation,
                $"'{target.Name}' is {(target.Class == QubeClass.AdminVM ? "dom0, which has no network at all" : "a remote qube, with no local network")}: nothing can be forwarded to it.", target.Name);
        if (target.NetVM is null)
            throw new QubesFirewallException(ErrorIds.NoNetVM, FailureKind.InvalidOperation,
                $"'{target.Name}' has no network qube (its netvm is none), so no traffic can reach it. Set its netvm first (qvm-prefs {target.Name} netvm sys-firewall).", target.Name);
        if (target.IP is null)
            throw new QubesFirewallException(ErrorIds.NoNetVM, FailureKind.InvalidOperation, $"'{target.Name}' has no IPv4 address, so nothing can be forwarded to it.", target.Name);
        if (checks) CheckWhonix(inventory, target, isTarget: true);

        // walk up: netvm, its netvm, ... (outermost last)
        var upstream = new List<Qube>();
        var seen = new List<string> { target.Name };
        var current = target;
        while (current.NetVM is { } next)
        {
            if (seen.Contains(next, StringComparer.Ordinal))
                throw new QubesFirewallException(ErrorIds.NetVmLoop, FailureKind.InvalidData,
                    $"The network chain of '{target.Name}' loops: {string.Join(" -> ", seen.Append(next))}. qubesd refuses such a setting; fix the netvm of one of these qubes.", target.Name);
            var up = inventory.Find(next) ?? throw new QubesFirewallException(ErrorIds.NetVmNotFound, FailureKind.ObjectNotFound,
                $"'{current.Name}' uses '{next}' as its network qube, but there is no qube of that name.", next);
            if (up.IP is null)
                throw new QubesFirewallException(ErrorIds.NoNetVM, FailureKind.InvalidOperation, $"'{up.Name}', the network qube of '{current.Name}', has no IPv4 address.", up.Name);
            seen.Add(next);
            upstream.Add(up);
            if (forward.Type == ForwardType.Internal) break;
            current = up;
        }
        if (checks)
        {
            // Every qube of the chain is checked, the outermost too, though it costs each one's tags and template features: one
            // without a netvm can still be a Whonix gateway in Qubes' terms (the tag, or whonix-gw along its template chain) with
            // a NIC of its own, and a forward through it would reach its clients around Tor.
            foreach (var hop in upstream) CheckWhonix(inventory, hop, isTarget: false);
            foreach (var qube in upstream.Append(target)) QubesRelease.EnsureSupported(inventory, qube);
        }

        if (requireRunning)
        {
            var halted = upstream.Where(h => h.State != PowerState.Running).ToList();
            if (halted.Count > 0)
                throw new QubesFirewallException(ErrorIds.HopNotRunning, FailureKind.ResourceUnavailable,
                    $"{Describe(halted)} on the way to '{target.Name}' {(halted.Count == 1 ? "is" : "are")} not running ({string.Join(", ", halted.Select(h => $"{h.Name}: {h.State}"))}). " +
                    "Start the network qubes first (qvm-start), so their rules can be applied now and not only at their next start.", halted[0].Name);
        }

        upstream.Reverse(); // outermost first
        // IPv6 only end to end: a hop without it has no ip6 custom chains and no IPv6 route to the next
        var ipv6 = target.IPv6 is not null && upstream.All(u => u.IPv6 is not null);
        var hops = new List<ChainHop>(upstream.Count);
        for (var i = 0; i < upstream.Count; i++)
        {
            var qube = upstream[i];
            var isLast = i == upstream.Count - 1;
            var next = isLast ? target.IP : upstream[i + 1].IP!;
            var next6 = ipv6 ? (isLast ? target.IPv6 : upstream[i + 1].IPv6) : null;
            HopIngressKind ingress;
            string? local;
            if (forward.Type == ForwardType.External)
            {
                if (i == 0)
                {
                    ingress = forward.Interface is null ? HopIngressKind.OutsideInterfaces : HopIngressKind.NamedInterface;
                    local = null; // sys-net's LAN address comes from DHCP: match any address of its own
                }
                else
                {
                    ingress = HopIngressKind.Uplink;
                    local = qube.IP;
                }
            }
            else if (forward.Interface is not null)
            {
                ingress = HopIngressKind.NamedInterface;
                local = null; // e.g. a VPN tunnel address
            }
            else
            {
                ingress = HopIngressKind.Clients;
                local = qube.IP;
            }
            // the IPv6 twin of the local address: the qube's own Qubes IPv6 address where the IPv4 rule names its Qubes IPv4 address
            var local6 = ipv6 && local is not null ? qube.IPv6 : null;
            hops.Add(new ChainHop(qube, i, ingress, forward.Interface is not null && i == 0 ? forward.Interface : null, local, next, isLast, local6, next6));
        }
        return new NetworkChain(forward, target, hops);
    }

    private static string Describe(IReadOnlyList<Qube> qubes) =>
        qubes.Count == 1 ? $"The network qube '{qubes[0].Name}'" : $"The network qubes {string.Join(", ", qubes.Select(q => $"'{q.Name}'"))}";

    private static void CheckWhonix(QubesInventory inventory, Qube qube, bool isTarget)
    {
        if (!QubesFacts.IsWhonixGateway(inventory, qube)) return;
        var where = isTarget ? $"'{qube.Name}' is a Whonix gateway" : $"'{qube.Name}', on the way, is a Whonix gateway";
        throw new QubesFirewallException(ErrorIds.WhonixInChain, FailureKind.InvalidOperation,
            $"{where}. A Whonix gateway sends everything its clients do through Tor, and its clients are reachable only as Tor onion services; " +
            "a port forwarded through it would let traffic in around Tor, bypassing and breaking the isolation that Whonix exists for, and the gateway " +
            "does not run the qubes-firewall service that enforces its clients' rules. Nothing was changed. To publish a service of an anon qube, " +
            "configure an onion service in the gateway; to expose this qube to the network, give it a netvm that is not a Whonix gateway.", qube.Name);
    }

    internal static string Port(int port) => port.ToString(CultureInfo.InvariantCulture);
}

/// <summary>Detects qubes whose Qubes agent is older than R4.2 (iptables era), where the nft scripts cannot work.</summary>
public static class QubesRelease
{
    /// <summary>
    /// The <c>qubes-agent-version</c> feature a template reports after an update (core-agent-linux's
    /// post-install hook, e.g. <c>4.2.17</c>), looked up on the qube then its templates. Below 4.2 the
    /// qube's firewall is built with iptables, and R4.0/R4.1 are end of life: refused.
    /// </summary>
    public static void EnsureSupported(QubesInventory inventory, Qube qube)
    {
        foreach (var q in QubesFacts.TemplateChain(inventory, qube))
        {
            if (!q.Features.TryGetValue("qubes-agent-version", out var version)) continue;
            if (TryParse(version, out var major, out var minor) && (major < 4 || (major == 4 && minor < 2)))
                throw new QubesFirewallException(ErrorIds.QubesReleaseNotSupported, FailureKind.NotImplemented,
                    $"'{qube.Name}' runs the Qubes {major}.{minor} agent ({(q.Name == qube.Name ? "its" : $"template {q.Name}'s")} qubes-agent-version feature is '{version}'). " +
                    "Port forwarding is generated for Qubes R4.2 and later, where qubes build their firewall with nftables; R4.0 and R4.1 use iptables and are end of life. " +
                    "Upgrade the system (or the template) to R4.2 or later. Nothing was changed.", qube.Name);
            return;
        }
    }

    private static bool TryParse(string version, out int major, out int minor)
    {
        major = minor = 0;
        var parts = version.Split('.');
        return parts.Length >= 2 && int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out major)
            && int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out minor);
    }
}
