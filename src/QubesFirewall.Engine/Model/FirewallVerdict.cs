namespace QubesFirewall.Engine.Model;

public enum FirewallVerdictKind { Accept, Drop, Unknown }

/// <summary>First-match evaluation of a Qubes firewall rule list for one destination, as the network qube applies it.</summary>
public static class FirewallVerdict
{
    /// <summary>
    /// The verdict of the first rule matching (protocol, destination address, port), with its number (as
    /// Get-QubeFirewallRule numbers it) and the rule. A rule naming a host before any match makes the
    /// verdict Unknown (only the network qube resolves names). Without any match: Drop (the policy).
    /// </summary>
    public static (FirewallVerdictKind Verdict, int Number, FirewallRule? Rule) Evaluate(IReadOnlyList<FirewallRule> rules, RuleProtocol protocol, string address, int port, DateTimeOffset now)
    {
        var number = -1;
        foreach (var rule in rules)
        {
            if (rule.IsExpiredAt(now)) continue;
            number++;
            if (rule.SpecialTarget is not null) continue;
            if (rule.Protocol is { } p && p != protocol) continue;
            if (rule.DstPorts is { } ports && (port < ports.First || port > ports.Last)) continue;
            if (rule.DstHost is { } host)
            {
                if (host.Kind == HostKind.Name) return (FirewallVerdictKind.Unknown, number, rule);
                if (!PortForward.Contains(host, address)) continue;
            }
            else if (rule.RawDstHost is not null) continue;
            return (rule.Action == RuleAction.Accept ? FirewallVerdictKind.Accept : FirewallVerdictKind.Drop, number, rule);
        }
        return (FirewallVerdictKind.Drop, number, null);
    }
}
