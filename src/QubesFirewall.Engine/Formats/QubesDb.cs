using System.Globalization;
using QubesFirewall.Engine.Model;

namespace QubesFirewall.Engine.Formats;

/// <summary>One QubesDB key in a qube (<see cref="QubeName"/>), as qubesd writes it.</summary>
public sealed record QubesDbEntry(string QubeName, string Path, string Value)
{
    /// <summary>True for entries the engine computed rather than read back from a running qube.</summary>
    public bool Rendered { get; init; } = true;

    public override string ToString() => $"{QubeName}:{Path}={Value}";
}

/// <summary>The QubesDB entries qubesd writes into a network qube for one client's firewall.</summary>
public static class QubesDbRenderer
{
    public const string Root = "/qubes-firewall";

    /// <summary>
    /// For each address family the client has: <c>/qubes-firewall/&lt;ip&gt;/policy</c> = drop, one
    /// key per rule numbered by its position in the stored list (4 digits; expired rules and rules
    /// of the other family skipped, leaving gaps), then the empty commit marker
    /// <c>/qubes-firewall/&lt;ip&gt;</c> the agent watches. Before writing, qubesd removes the whole
    /// <c>/qubes-firewall/&lt;ip&gt;/</c> subtree; <see cref="SubtreesToClear"/> names them.
    /// </summary>
    public static IReadOnlyList<QubesDbEntry> Render(string netVmName, string? clientIPv4, string? clientIPv6, IReadOnlyList<FirewallRule> storedRules, DateTimeOffset now)
    {
        var entries = new List<QubesDbEntry>(((clientIPv4 is null ? 0 : 1) + (clientIPv6 is null ? 0 : 1)) * (storedRules.Count + 2));
        foreach (var (ip, family) in new[] { (clientIPv4, HostKind.IPv4), (clientIPv6, HostKind.IPv6) })
        {
            if (ip is null) continue;
            var exclude = family == HostKind.IPv4 ? HostKind.IPv6 : HostKind.IPv4;
            var dir = $"{Root}/{ip}/";
            entries.Add(new(netVmName, dir + "policy", "drop"));
            for (var i = 0; i < storedRules.Count; i++)
            {
                var rule = storedRules[i];
                if (rule.IsExpiredAt(now)) continue;
                if (rule.DstHost?.Kind == exclude) continue;
                entries.Add(new(netVmName, Numbered(dir, i), RuleText.FormatForQubesDb(rule)));
            }
            entries.Add(new(netVmName, dir[..^1], ""));
        }
        return entries;
    }

    // dir followed by the rule's number, at least 4 digits, in one new string (a 10,000-rule client has 10,000).
    private static string Numbered(string dir, int number)
    {
        var digits = 4;
        for (var rest = number / 10000; rest > 0; rest /= 10) digits++;
        return string.Create(dir.Length + digits, (dir, number), static (span, state) =>
        {
            state.dir.CopyTo(span);
            state.number.TryFormat(span[state.dir.Length..], out _, "D4", CultureInfo.InvariantCulture);
        });
    }

    /// <summary>The subtrees qubesd removes before it writes a client's entries (one per family).</summary>
    public static IEnumerable<string> SubtreesToClear(string? clientIPv4, string? clientIPv6)
    {
        if (clientIPv4 is not null) yield return $"{Root}/{clientIPv4}/";
        if (clientIPv6 is not null) yield return $"{Root}/{clientIPv6}/";
    }
}
