using System.Globalization;
using System.Net;
using CsCheck;
using QubesFirewall.Engine.Model;
using Xunit.Abstractions;

namespace QubesFirewall.Engine.Tests.Fuzz;

/// <summary>
/// Properties of the rule text parser (<see cref="RuleText.Parse"/>) over generated input: it never
/// throws anything but <see cref="QubesFirewallException"/>; whatever it accepts formats to a canonical
/// text (qubesd's Get order) made only of the grammar's characters that parses back to itself; every rule
/// built from the grammar parses to exactly its fields; mutated valid lines are refused or still canonical.
/// </summary>
public sealed class RuleTextPropertyTests(ITestOutputHelper output)
{
    private static readonly DateTimeOffset Now = DateTimeOffset.FromUnixTimeSeconds(1_800_000_000);

    /// <summary>A rule as fields, the line a user could type for it, and the canonical text qubesd would show.</summary>
    public sealed record GeneratedRule(string Line, string Canonical, RuleAction Action, string? Host, RuleProtocol? Protocol, string? Ports, int? Icmp, bool Dns, long? Expire, string? Comment)
    {
        public override string ToString() => Fuzz.Show(Line);
    }

    private static readonly Gen<string> Octet = Gen.Int[0, 255].Select(i => i.ToString(CultureInfo.InvariantCulture));

    private static readonly Gen<(string Text, string Canonical, string Key)> IPv4 =
        from a in Octet
        from b in Octet
        from c in Octet
        from d in Octet
        from prefix in Gen.Int[-1, 32]
        from key in Gen.OneOf(Gen.Const("dst4"), Gen.Const("dsthost"))
        let addr = $"{a}.{b}.{c}.{d}"
        select (prefix < 0 ? addr : $"{addr}/{prefix}", prefix < 0 ? addr + "/32" : $"{addr}/{prefix}", key);

    private static readonly Gen<(string Text, string Canonical, string Key)> IPv6 =
        from bytes in Gen.Byte.Array[16]
        from prefix in Gen.Int[-1, 128]
        from key in Gen.OneOf(Gen.Const("dst6"), Gen.Const("dsthost"))
        let addr = new IPAddress(bytes).ToString()
        where addr.Contains(':')
        select (prefix < 0 ? addr : $"{addr}/{prefix}", prefix < 0 ? addr + "/128" : $"{addr}/{prefix}", key);

    private static readonly Gen<(string Text, string Canonical, string Key)> HostName =
        from head in Gen.String[Gen.Char["abcdefghijklmnopqrstuvwxyz0123456789-._"], 0, 20]
        from letter in Gen.Char['a', 'z']
        from tail in Gen.String[Gen.Char["abcdefghijklmnopqrstuvwxyz0123456789-._"], 0, 20]
        let name = head + letter + tail
        select (name, name, "dsthost");

    private static readonly Gen<string> CommentText = Gen.String[Gen.Char["abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 :;,./-_[]"], 1, 60];

    private static readonly Gen<string> Separator = Gen.OneOf(Gen.Const(" "), Gen.Const("  "), Gen.Const("\t"), Gen.Const(" \t "));

    /// <summary>Valid rules of every shape the grammar allows, keys in any order, odd spacing, leading zeros.</summary>
    public static readonly Gen<GeneratedRule> ValidRule =
        from action in Gen.Enum<RuleAction>()
        from hostKind in Gen.Int[0, 3]
        from v4 in IPv4
        from v6 in IPv6
        from name in HostName
        from proto in Gen.Int[0, 3]
        from hasPorts in Gen.Bool
        from p1 in Gen.Int[0, 65535]
        from p2 in Gen.Int[0, 65535]
        from single in Gen.Bool
        from zeros in Gen.Int[0, 3]
        from hasIcmp in Gen.Bool
        from icmp in Gen.Int[0, 255]
        from dns in Gen.Int[0, 4]
        from expireKind in Gen.Int[0, 2]
        from expire in Gen.Long[0, 999_999_999_999]
        from relative in Gen.Long[0, 99_999_999]
        from hasComment in Gen.Int[0, 2]
        from comment in CommentText
        from order in Gen.Int[0, int.MaxValue]
        from seps in Separator.Array[10]
        from lead in Gen.OneOf(Gen.Const(""), Gen.Const(" "), Gen.Const("\t"))
        select Build(action, hostKind switch { 1 => v4, 2 => v6, 3 => name, _ => default }, proto, hasPorts, p1, p2, single, zeros, hasIcmp, icmp, dns == 0,
            expireKind, expire, relative, hasComment != 0 ? comment : null, order, seps, lead);

    private static GeneratedRule Build(RuleAction action, (string Text, string Canonical, string Key) host, int proto, bool hasPorts, int p1, int p2, bool single,
        int zeros, bool hasIcmp, int icmp, bool dns, int expireKind, long expire, long relative, string? comment, int order, string[] seps, string lead)
    {
        var words = new List<string> { "action=" + (action == RuleAction.Accept ? "accept" : "drop") };
        RuleProtocol? protocol = proto switch { 1 => RuleProtocol.Tcp, 2 => RuleProtocol.Udp, 3 => RuleProtocol.Icmp, _ => null };
        string? hostCanonical = host.Text is null ? null : host.Canonical;
        if (host.Text is not null) words.Add($"{host.Key}={host.Text}");
        if (protocol is { } p) words.Add("proto=" + p.ToString().ToLowerInvariant());
        string? ports = null;
        if (hasPorts && protocol is RuleProtocol.Tcp or RuleProtocol.Udp)
        {
            var (lo, hi) = (Math.Min(p1, p2), Math.Max(p1, p2));
            if (single) hi = lo;
            var pad = new string('0', zeros);
            words.Add("dstports=" + (single ? pad + lo : $"{pad}{lo}-{hi}"));
            ports = $"{lo}-{hi}";
        }
        int? icmpType = hasIcmp && protocol == RuleProtocol.Icmp ? icmp : null;
        if (icmpType is { } t) words.Add("icmptype=" + (zeros > 0 && t < 100 ? "0" : "") + t);
        if (dns) words.Add("specialtarget=dns");
        long? expires = expireKind switch { 1 => expire, 2 => Now.ToUnixTimeSeconds() + relative, _ => null };
        if (expireKind == 1) words.Add("expire=" + expire);
        if (expireKind == 2) words.Add("expire=+" + relative);

        // any key order (a rotation and a swap drawn from 'order'), comment last
        var rotate = order % words.Count;
        words = [.. words.Skip(rotate), .. words.Take(rotate)];
        if (words.Count > 1) { var i = (order / 7) % words.Count; var j = (order / 131) % words.Count; (words[i], words[j]) = (words[j], words[i]); }
        if (comment is not null) words.Add("comment=" + comment);
        var line = lead;
        for (var w = 0; w < words.Count; w++) line += (w == 0 ? "" : seps[w % seps.Length]) + words[w];

        var canonical = "action=" + (action == RuleAction.Accept ? "accept" : "drop");
        if (expires is { } e) canonical += " expire=" + e;
        if (hostCanonical is not null)
        {
            var key = hostCanonical.Contains(':') ? "dst6" : HostSpec.TryIPv4(hostCanonical.Split('/')[0]) ? "dst4" : "dsthost";
            canonical += $" {key}={hostCanonical}";
        }
        if (protocol is { } pr) canonical += " proto=" + pr.ToString().ToLowerInvariant();
        if (dns) canonical += " specialtarget=dns";
        if (ports is not null) canonical += " dstports=" + ports;
        if (icmpType is { } it) canonical += " icmptype=" + it;
        if (comment is not null) canonical += " comment=" + comment;
        return new GeneratedRule(line, canonical, action, hostCanonical, protocol, ports, icmpType, dns, expires, comment);
    }

    /// <summary>The contract every input must meet: a refusal is a QubesFirewallException; an acceptance is canonical and safe.</summary>
    internal static FirewallRule? CheckContract(string line)
    {
        FirewallRule rule;
        try
        {
            rule = RuleText.Parse(line, Now);
        }
        catch (QubesFirewallException ex)
        {
            Assert.False(string.IsNullOrWhiteSpace(ex.ErrorId));
            Assert.False(string.IsNullOrWhiteSpace(ex.Message));
            Assert.DoesNotContain('\n', ex.Message); // control characters are escaped in messages
            Assert.DoesNotContain('\0', ex.Message);
            return null;
        }
        var canonical = rule.Text;
        // Only the grammar's characters: letters, digits, space, '=', and :;,./-_[] (comments), '+' never.
        foreach (var c in canonical)
            if (!(RuleGrammar.IsCommentChar(c) || c == '=')) Assert.Fail($"character {RuleGrammar.Describe(c)} in '{canonical}'");
        var again = RuleText.Parse(canonical, Now);
        Assert.Equal(canonical, again.Text);
        Assert.Equal(rule with { }, again with { UnknownProperties = rule.UnknownProperties, Problems = rule.Problems });
        rule.Validate(); // what parses is valid for qubesd
        Assert.Equal(canonical, RuleText.Parse(RuleText.Format(rule), Now).Text);
        return rule;
    }

    [Fact]
    public void Generated_valid_rules_always_parse_to_their_fields_and_their_canonical_text()
    {
        Fuzz.Check("rule text: valid rules", ValidRule, 3000, g =>
        {
            var rule = CheckContract(g.Line);
            Assert.NotNull(rule);
            Assert.Equal(g.Canonical, rule!.Text);
            Assert.Equal(g.Action, rule.Action);
            Assert.Equal(g.Host, rule.DstHost?.Value);
            Assert.Equal(g.Protocol, rule.Protocol);
            Assert.Equal(g.Ports, rule.DstPorts?.RangeText);
            Assert.Equal(g.Icmp, rule.IcmpType);
            Assert.Equal(g.Dns, rule.SpecialTarget is not null);
            Assert.Equal(g.Expire, rule.Expire);
            Assert.Equal(g.Comment, rule.Comment);
        }, output.WriteLine);
    }

    [Fact]
    public void Random_text_is_refused_with_a_clear_error_or_parsed_canonically()
    {
        var tokens = Gen.OneOf(
            Gen.Const("action="), Gen.Const("accept"), Gen.Const("drop"), Gen.Const("proto="), Gen.Const("tcp"), Gen.Const("udp"), Gen.Const("icmp"),
            Gen.Const("dst4="), Gen.Const("dst6="), Gen.Const("dsthost="), Gen.Const("dstports="), Gen.Const("icmptype="), Gen.Const("specialtarget="),
            Gen.Const("dns"), Gen.Const("expire="), Gen.Const("+"), Gen.Const("comment="), Gen.Const(" "), Gen.Const("\t"), Gen.Const("/"), Gen.Const("-"),
            Gen.Const(":"), Gen.Const("::"), Gen.Const("."), Gen.Const("="), Gen.Const("1.2.3.4"), Gen.Const("fd00::1"), Gen.Const("65535"), Gen.Const("65536"),
            Gen.Const("999999999999999"), Gen.Const("0"), Gen.Const("a.example"), Gen.Const("ACCEPT"), Gen.Const("\u00e9"), Gen.Const("\u0660"),
            Gens.Digits, Gens.Lower, Gens.Payload, Gen.String[Gens.AnyChar, 1, 4]);
        var soup = tokens.Array[0, 14].Select(parts => string.Concat(parts));
        // Whole words in any order and number: lines that often parse, so the accepting side of the contract runs too.
        var words = Gen.OneOf(
            Gen.Const("action=accept"), Gen.Const("action=drop"), Gen.Const("proto=tcp"), Gen.Const("proto=udp"), Gen.Const("proto=icmp"),
            Gen.Const("dst4=192.0.2.0/24"), Gen.Const("dst6=2001:db8::/32"), Gen.Const("dsthost=a.example"), Gen.Const("dstports=443"),
            Gen.Const("dstports=1-1024"), Gen.Const("icmptype=8"), Gen.Const("specialtarget=dns"), Gen.Const("expire=1900000000"),
            Gen.Const("comment=a b; c"), Gens.Payload);
        var wordSoup = words.Array[1, 6].Select(parts => string.Join(' ', parts));
        var accepted = 0;
        var n = Fuzz.Check("rule text: token soup", soup, 6000, line => { if (CheckContract(line) is not null) accepted++; }, output.WriteLine, Fuzz.Show);
        n += Fuzz.Check("rule text: random strings", Gens.AnyString, 3000, line => { if (CheckContract(line) is not null) accepted++; }, output.WriteLine, Fuzz.Show);
        n += Fuzz.Check("rule text: word soup", wordSoup, 3000, line => { if (CheckContract(line) is not null) accepted++; }, output.WriteLine, Fuzz.Show);
        output.WriteLine($"  parsed {accepted} of {n}");
        // The generators must reach both sides of the contract, or the property checks only one of them.
        Assert.InRange(accepted, 1, n - 1);
    }

    [Fact]
    public void Mutations_of_valid_lines_are_refused_or_stay_canonical_and_carry_no_unvalidated_character()
    {
        var accepted = 0;
        Fuzz.Check("rule text: mutated valid lines", Gens.Mutate(ValidRule.Select(g => g.Line)), 6000, line =>
        {
            if (CheckContract(line) is not null) accepted++;
        }, output.WriteLine, Fuzz.Show);
        output.WriteLine($"  of which still valid after mutation: {accepted}");
    }

    [Fact]
    public void Injection_payloads_anywhere_in_a_valid_line_never_pass_with_their_special_characters()
    {
        var gen = from g in ValidRule
                  from payload in Gens.Payload
                  from at in Gen.Int[0, 1000]
                  let pos = at % (g.Line.Length + 1)
                  select g.Line.Insert(pos, payload);
        Fuzz.Check("rule text: payload insertion", gen, 4000, line =>
        {
            var rule = CheckContract(line);
            if (rule is null) return;
            // Accepted only when the payload's characters are all in the grammar (a comment may hold "; touch /tmp/x").
            Assert.DoesNotContain(rule.Text, c => c is '$' or '`' or '|' or '&' or '<' or '>' or '(' or ')' or '\'' or '"' or '\\' or '\n' or '\0');
        }, output.WriteLine, Fuzz.Show);
    }
}
