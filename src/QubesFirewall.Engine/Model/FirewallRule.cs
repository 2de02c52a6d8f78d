namespace QubesFirewall.Engine.Model;

/// <summary>
/// One rule of a qube's Qubes firewall, with the properties qubesd knows. Built through
/// <see cref="Create"/> (strict, qubesd's validation) or read leniently from a file, in which
/// case anything an older qubesd let through is listed in <see cref="Problems"/>.
/// </summary>
public sealed record FirewallRule
{
    // Each property forgets what was derived from the properties before (the text, a passed validation) when it is set,
    // so a copy made with `with` never keeps the text or the validation of the rule it was copied from.
    public required RuleAction Action { get => _action; init { _action = value; _derived = default; } }
    public RuleProtocol? Protocol { get => _protocol; init { _protocol = value; _derived = default; } }
    public HostSpec? DstHost { get => _dstHost; init { _dstHost = value; _derived = default; } }
    public PortRange? DstPorts { get => _dstPorts; init { _dstPorts = value; _derived = default; } }
    public int? IcmpType { get => _icmpType; init { _icmpType = value; _derived = default; } }
    public SpecialTarget? SpecialTarget { get => _specialTarget; init { _specialTarget = value; _derived = default; } }
    /// <summary>Unix time at which the rule stops applying; null for none.</summary>
    public long? Expire { get => _expire; init { _expire = value; _derived = default; } }
    public string? Comment { get => _comment; init { _comment = value; _derived = default; } }

    private readonly RuleAction _action;
    private readonly RuleProtocol? _protocol;
    private readonly HostSpec? _dstHost;
    private readonly PortRange? _dstPorts;
    private readonly int? _icmpType;
    private readonly SpecialTarget? _specialTarget;
    private readonly long? _expire;
    private readonly string? _comment;
    private readonly string? _rawDstHost;
    private readonly IReadOnlyList<KeyValuePair<string, string>> _unknown = [];
    private readonly IReadOnlyList<string> _problems = [];
    private Derived _derived;

    /// <summary>Properties qubesd does not know, kept from firewall.xml in their order so a write loses nothing.</summary>
    public IReadOnlyList<KeyValuePair<string, string>> UnknownProperties { get => _unknown; init { _unknown = value; _derived = default; } }

    /// <summary>Why this rule (read from a file) would be refused by today's qubesd; empty when valid.</summary>
    public IReadOnlyList<string> Problems { get => _problems; init { _problems = value; _derived = default; } }

    /// <summary>
    /// Raw values kept for a rule read leniently whose value has no typed form (an empty host),
    /// so the rule is shown and written back exactly as read until the user removes it.
    /// </summary>
    internal string? RawDstHost { get => _rawDstHost; init { _rawDstHost = value; _derived = default; } }

    public bool IsValid => Problems.Count == 0;

    /// <summary>
    /// A catch-all matches everything: only an action (plus expire or comment). A new rule goes
    /// in before the last one, where it can still match.
    /// </summary>
    public bool IsCatchAll => Protocol is null && DstHost is null && RawDstHost is null && DstPorts is null && IcmpType is null && SpecialTarget is null;

    public DateTimeOffset? ExpireTime => Expire is { } e ? DateTimeOffset.FromUnixTimeSeconds(e) : null;

    /// <summary>
    /// qubesd treats a rule as expired once its time is strictly in the past: <c>datetime.fromtimestamp(expire) &lt;
    /// datetime.now()</c> (core-admin qubes/firewall.py Expire.expired), so already within the expiry second.
    /// </summary>
    public bool IsExpiredAt(DateTimeOffset now) => Expire is { } e && e * 1000 < now.ToUnixTimeMilliseconds();

    /// <summary>
    /// Builds a rule with qubesd's validation: the value grammars, dstports only with tcp/udp,
    /// icmptype only with icmp, comment characters. Throws <see cref="QubesFirewallException"/>.
    /// </summary>
    public static FirewallRule Create(
        RuleAction action,
        RuleProtocol? protocol = null,
        string? dstHost = null,
        string? dstPorts = null,
        int? icmpType = null,
        SpecialTarget? specialTarget = null,
        long? expire = null,
        string? comment = null) =>
        FromParts(action, protocol, dstHost is null ? null : HostSpec.Parse(dstHost), dstPorts is null ? null : PortRange.Parse(dstPorts),
            icmpType, specialTarget, expire, comment);

    /// <summary>As <see cref="Create"/>, with the host and ports already parsed.</summary>
    internal static FirewallRule FromParts(RuleAction action, RuleProtocol? protocol, HostSpec? dstHost, PortRange? dstPorts,
        int? icmpType, SpecialTarget? specialTarget, long? expire, string? comment)
    {
        var rule = new FirewallRule
        {
            Action = action,
            Protocol = protocol,
            DstHost = dstHost,
            DstPorts = dstPorts,
            IcmpType = icmpType,
            SpecialTarget = specialTarget,
            Expire = expire,
            Comment = string.IsNullOrEmpty(comment) ? null : comment,
        };
        rule.Validate();
        return rule;
    }

    /// <summary>Throws the first reason qubesd would refuse this rule. Checked once: a rule's properties never change, and a
    /// piped rule was validated when it was made, again when planned and again when written (a 10,000-rule Add: 30,000 checks).</summary>
    public void Validate()
    {
        if (_derived.Valid) return;
        if (Problems.Count > 0)
            throw QubesFirewallException.Invalid(ErrorIds.InvalidFirewallRule, $"Invalid firewall rule '{RuleText.Format(this)}': {Problems[0]}", this);
        if (DstPorts is { } ports)
        {
            if (!ports.IsValid)
                throw QubesFirewallException.Invalid(ErrorIds.InvalidDstPorts, $"Invalid destination ports '{ports}': ports are 0-65535 and the first is not above the last.", this);
            if (Protocol is not (RuleProtocol.Tcp or RuleProtocol.Udp))
                throw QubesFirewallException.Invalid(ErrorIds.PortsNeedTcpOrUdp, "Destination ports are valid only with protocol tcp or udp.", this);
        }
        if (IcmpType is { } icmp)
        {
            if (icmp is < 0 or > 255)
                throw QubesFirewallException.Invalid(ErrorIds.InvalidIcmpType, $"Invalid ICMP type {icmp}: use 0-255.", this);
            if (Protocol != RuleProtocol.Icmp)
                throw QubesFirewallException.Invalid(ErrorIds.IcmpTypeNeedsIcmp, "An ICMP type is valid only with protocol icmp.", this);
        }
        if (Expire is < 0)
            throw QubesFirewallException.Invalid(ErrorIds.InvalidExpire, "The expiry time must be a Unix time (seconds since 1970), not negative.", this);
        if (Comment is { } c) RuleGrammar.ValidateComment(c);
        foreach (var (name, value) in UnknownProperties)
        {
            if (name.Length == 0 || !name.All(ch => char.IsAsciiLetterOrDigit(ch) || ch is '_' or '-'))
                throw QubesFirewallException.Invalid(ErrorIds.InvalidFirewallXml, $"Unknown property name '{RuleGrammar.Printable(name)}' cannot be written.", this);
            if (value.Any(ch => ch is < ' ' or > '~' or '<' or '>' or '&'))
                throw QubesFirewallException.Invalid(ErrorIds.InvalidFirewallXml, $"Unknown property '{name}' has a value that cannot be written.", this);
        }
        _derived.Valid = true;
    }

    /// <summary>The rule in the Admin API / qvm-firewall text form (made once: planning, the plan's text and the write
    /// under the lock each look at the text of every rule of a 10,000-rule pipeline).</summary>
    public string Text => _derived.Text ??= RuleText.Format(this);

    /// <summary>The text when it was made already, else null (and not made).</summary>
    internal string? TextIfMade => _derived.Text;

    public override string ToString() => Text;

    /// <summary>
    /// What is derived from the properties: the text once made, and whether <see cref="Validate"/> passed. Equal to any
    /// other, so it takes no part in the record's equality or hash code: two rules with the same properties are equal
    /// whether or not either text was made or either rule checked yet.
    /// </summary>
    private struct Derived : IEquatable<Derived>
    {
        public string? Text;
        public bool Valid;

        public readonly bool Equals(Derived other) => true;

        public override readonly bool Equals(object? obj) => obj is Derived;

        public override readonly int GetHashCode() => 0;
    }
}
