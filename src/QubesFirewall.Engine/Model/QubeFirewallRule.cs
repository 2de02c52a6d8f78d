namespace QubesFirewall.Engine.Model;

/// <summary>
/// A rule as Get-QubeFirewallRule shows it: the qube, its number (0-based among the rules qubesd
/// shows, as qvm-firewall numbers them) and the rule's properties flattened, named like the
/// parameters of Add-QubeFirewallRule so objects pipe straight back in.
/// </summary>
public sealed record QubeFirewallRule(string VMName, int Number, FirewallRule Rule)
{
    public RuleAction Action => Rule.Action;
    public RuleProtocol? Protocol => Rule.Protocol;
    public string? DstHost => Rule.DstHost?.Value ?? Rule.RawDstHost;
    public string? DstPorts => Rule.DstPorts?.ToString();
    public int? IcmpType => Rule.IcmpType;
    public SpecialTarget? SpecialTarget => Rule.SpecialTarget;
    /// <summary>When the rule stops applying, in local time; null if never.</summary>
    public DateTime? Expire => Rule.ExpireTime?.LocalDateTime;
    public string? Comment => Rule.Comment;
    /// <summary>The rule's line exactly as qubesd's admin.vm.firewall.Get returns it.</summary>
    public string Text => Rule.Text;
    public bool IsCatchAll => Rule.IsCatchAll;
    /// <summary>Why today's qubesd would refuse this rule (read from an old file); empty when valid.</summary>
    public IReadOnlyList<string> Problems => Rule.Problems;

    public override string ToString() => $"{VMName}#{Number}: {Text}";

    /// <summary>The rules qubesd's Get shows (expired ones left out), numbered from 0.</summary>
    public static IReadOnlyList<QubeFirewallRule> Visible(string vmName, IEnumerable<FirewallRule> stored, DateTimeOffset now)
    {
        var visible = new List<QubeFirewallRule>(stored.TryGetNonEnumeratedCount(out var count) ? count : 0);
        foreach (var rule in stored)
            if (!rule.IsExpiredAt(now)) visible.Add(new QubeFirewallRule(vmName, visible.Count, rule));
        return visible;
    }
}
