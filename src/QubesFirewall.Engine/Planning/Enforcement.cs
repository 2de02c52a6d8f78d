using QubesFirewall.Engine.Model;

namespace QubesFirewall.Engine.Planning;

/// <summary>How a network qube treats its clients' Qubes firewall rules.</summary>
public sealed record NetVmEnforcement(string NetVM, bool Enforces, string Reason, string? Fix);

/// <summary>
/// Who enforces a qube's Qubes firewall rules, in the words every cmdlet uses: the audit (EnforcedIn,
/// NotEnforced, NoNetVM), the warning Add-/Set-QubeFirewallRule give when rules go to a qube nobody
/// enforces them for, and Sync-QubeFirewall's -Verbose and -WhatIf lines.
/// </summary>
/// <param name="VMName">The qube whose rules these are.</param>
/// <param name="NetVM">Its network qube as configured (null: no netvm).</param>
/// <param name="Enforced">True when its network qube exists and runs the qubes-firewall service.</param>
/// <param name="Summary">Short, for a ShouldProcess target: "enforced in sys-firewall", "NOT enforced: ...".</param>
/// <param name="Message">The audit's sentence about it.</param>
/// <param name="Fix">A command of this module that makes them enforced, or null (the message says what to do).</param>
public sealed record QubeEnforcement(string VMName, string? NetVM, bool Enforced, bool NetVmExists, string Summary, string Message, string? Fix)
{
    /// <summary>Whether the network qube is a Whonix gateway (never suggest moving a qube off it).</summary>
    public bool BehindWhonix { get; init; }
}

/// <summary>
/// The one place that decides who enforces a qube's rules. Only the qube's own network qube (its netvm),
/// and only if the <c>qubes-firewall</c> service runs there. Every qube that provides network runs it by
/// default (core-agent-linux <c>qubes-sysinit.sh</c>: on for the NetVM and ProxyVM types that qubesd gives a
/// qube with provides_network). Decided from what dom0 knows, in this order:
/// Each fact comes from <see cref="QubesFacts"/>, which cites the Qubes sources:
/// (1) feature <c>service.qubes-firewall</c> on the network qube with the empty value (what
/// <c>qvm-service N qubes-firewall off</c> stores) → not enforced; any non-empty value is on (qubesd
/// writes <c>str(int(bool(value)))</c> into the qube's QubesDB, so even <c>0</c> turns it on);
/// (2) feature <c>qubes-firewall</c> off on the network qube or its template chain (the template's
/// agent reports whether qubes-firewall.service is enabled there) → not enforced;
/// (3) a Whonix gateway (<see cref="QubesFacts.IsWhonixGateway"/>) → not enforced: it routes its clients through Tor with a firewall of its own;
/// otherwise enforced. VPN qubes are judged by the same rules and never guessed from names.
/// </summary>
public static class Enforcement
{
    /// <summary>Who enforces the rules of <paramref name="qube"/>.</summary>
    public static QubeEnforcement Of(QubesInventory inventory, Qube qube)
    {
        var name = qube.Name;
        if (qube.NetVM is null)
            return new QubeEnforcement(name, null, false, false, "not enforced: it has no network qube",
                $"'{name}' has no network qube: its firewall rules are not used (they apply again once it gets a netvm).", null);
        if (inventory.Find(qube.NetVM) is not { } netvm)
            return new QubeEnforcement(name, qube.NetVM, false, false, $"NOT enforced: its netvm '{qube.NetVM}' does not exist",
                $"The rules of '{name}' are not enforced: its netvm '{qube.NetVM}' does not exist. Give it a network qube in dom0 (qvm-prefs {name} netvm <a network qube>).", null);
        var of = OfNetVm(inventory, netvm);
        var whonix = QubesFacts.IsWhonixGateway(inventory, netvm);
        if (of.Enforces)
        {
            var families = qube.IPv6 is null ? $"{qube.IP}" : $"{qube.IP} and {qube.IPv6}";
            return new QubeEnforcement(name, netvm.Name, true, true, $"enforced in {netvm.Name}",
                $"The rules of '{name}' are enforced in '{netvm.Name}' (for {families}): {of.Reason}.", null);
        }
        var advice = whonix
            ? $" Do not move '{name}' off '{netvm.Name}' for this: that would take it off Tor. Filter inside the gateway, and for a connection to another qube use qubes.ConnectTCP (Add-QubeTcpBinding), which needs no network."
            : "";
        return new QubeEnforcement(name, netvm.Name, false, true, $"NOT enforced: {netvm.Name} does not enforce them",
            $"The rules of '{name}' are NOT enforced: its network qube '{netvm.Name}' does not enforce them ({of.Reason}).{advice}", of.Fix)
        { BehindWhonix = whonix };
    }

    /// <summary>Whether a network qube enforces its clients' rules, and why (see the class remarks for the order of the tests).</summary>
    public static NetVmEnforcement OfNetVm(QubesInventory inventory, Qube netvm)
    {
        var name = netvm.Name;
        if (QubesFacts.Service(netvm, "qubes-firewall") == false)
            return new NetVmEnforcement(name, false,
                $"its qubes-firewall service is turned off (feature service.qubes-firewall is empty, as 'qvm-service {name} qubes-firewall off' sets it; 'qvm-service --enable {name} qubes-firewall' in dom0 and a restart of {name} turn it on)",
                null);

        if (QubesFacts.AgentHasFirewallService(inventory, netvm) == false)
        {
            // the qube along the template chain whose report decides (check_with_template)
            var q = QubesFacts.TemplateChain(inventory, netvm).First(t => t.Features.ContainsKey("qubes-firewall"));
            return new NetVmEnforcement(name, false,
                (q.Name == name
                    ? "its Qubes agent reports that the qubes-firewall service is not enabled in it (feature qubes-firewall is off)"
                    : $"its template '{q.Name}' reports that the qubes-firewall service is not enabled there (feature qubes-firewall is off)")
                + $"; in '{q.Name}', 'sudo systemctl enable qubes-firewall.service' (package qubes-core-agent-networking), then restart {name}",
                null);
        }

        if (QubesFacts.IsWhonixGateway(inventory, netvm))
            return new NetVmEnforcement(name, false,
                "it is a Whonix gateway: it sends its clients' traffic through Tor with a firewall of its own and does not run the qubes-firewall service",
                null);

        var note = netvm.Features.TryGetValue("service.qubes-firewall", out var service) && service is { Length: > 0 } && service != "1"
            ? $" (its feature service.qubes-firewall is '{service}', which qubesd reads as on: any value but the empty string turns a service on)"
            : "";
        return new NetVmEnforcement(name, true, "its qubes-firewall service builds the qube's chain from them" + note, null);
    }

    /// <summary>
    /// A network qube a client must not be moved off when the module gives advice: a Whonix gateway, or a
    /// network qube that is itself behind a network qube that has one (sys-net → sys-firewall → this: where
    /// VPN qubes and Whonix gateways sit in the usual layout; a VPN qube is never guessed from its name).
    /// </summary>
    public static bool IsAnonymizingOrTunnel(QubesInventory inventory, Qube netvm) =>
        QubesFacts.IsWhonixGateway(inventory, netvm)
        || (netvm.NetVM is { } up && inventory.Find(up) is { NetVM: not null });
}
