using QubesFirewall.Engine;
using QubesFirewall.Engine.Model;

namespace QubesFirewall.Engine.Tests;

/// <summary>The validation table of the reference (qubesd's core-admin firewall.py), value by value.</summary>
public class RuleValidationTests
{
    [Theory]
    [InlineData("10.1.2.0/24", "10.1.2.0/24", HostKind.IPv4, 24)]
    [InlineData("192.168.1.1", "192.168.1.1/32", HostKind.IPv4, 32)]
    [InlineData("0.0.0.0/0", "0.0.0.0/0", HostKind.IPv4, 0)]
    [InlineData("10.1.2.0/024", "10.1.2.0/24", HostKind.IPv4, 24)]
    [InlineData("2001:db8::/032", "2001:db8::/32", HostKind.IPv6, 32)]
    [InlineData("2001:db8::1", "2001:db8::1/128", HostKind.IPv6, 128)]
    [InlineData("2001:db8::/32", "2001:db8::/32", HostKind.IPv6, 32)]
    [InlineData("::ffff:1.2.3.4", "::ffff:1.2.3.4/128", HostKind.IPv6, 128)]
    [InlineData("qubes-os.org", "qubes-os.org", HostKind.Name, 0)]
    [InlineData("my_host.example.com", "my_host.example.com", HostKind.Name, 0)]
    public void Valid_hosts_are_stored_as_qubesd_stores_them(string input, string stored, HostKind kind, int prefix)
    {
        var host = HostSpec.Parse(input);
        Assert.Equal(stored, host.Value);
        Assert.Equal(kind, host.Kind);
        Assert.Equal(prefix, host.PrefixLength);
    }

    [Fact]
    public void An_IPv4_address_is_four_decimal_octets_without_leading_zeros()
    {
        // Against the grammar written out part by part, on strings of digits and dots (and a stray character).
        static bool Expected(string s)
        {
            var parts = s.Split('.');
            return parts.Length == 4 && parts.All(p => p.Length is >= 1 and <= 3 && p.All(char.IsAsciiDigit) && (p.Length == 1 || p[0] != '0') && int.Parse(p) <= 255);
        }
        var random = new Random(21);
        const string alphabet = "0123456789....25x";
        var valid = 0;
        for (var n = 0; n < 20000; n++)
        {
            var s = n % 2 == 0
                ? new string(Enumerable.Range(0, random.Next(0, 17)).Select(_ => alphabet[random.Next(alphabet.Length)]).ToArray())
                : string.Join('.', Enumerable.Range(0, random.Next(3, 6)).Select(_ => random.Next(12) switch { 0 => "", 1 => "0" + random.Next(10), 2 => random.Next(250, 1000).ToString(), _ => random.Next(256).ToString() }));
            Assert.True(Expected(s) == HostSpec.TryIPv4(s), $"'{s}'");
            if (Expected(s)) valid++;
        }
        Assert.InRange(valid, 50, 19950); // both answers were checked
        foreach (var s in new[] { "0.0.0.0", "255.255.255.255", "1.2.3.4", "10.0.0.1", "192.168.1.1" }) Assert.True(HostSpec.TryIPv4(s), s);
        foreach (var s in new[] { "256.0.0.1", "1.2.3", "1.2.3.4.5", "01.2.3.4", "1.2.3.04", "1..3.4", ".1.2.3", "1.2.3.", "1000.1.1.1", "" }) Assert.False(HostSpec.TryIPv4(s), s);
    }

    [Theory]
    [InlineData("1.2.3.4/33")]
    [InlineData("2001:db8::/129")]
    [InlineData("1.2.3.4/24/8")]
    [InlineData("1.2.3/24")]
    [InlineData("1.2.3.4/")]
    [InlineData("1.2.3.4/x")]
    [InlineData("")]
    [InlineData("Example.com")]
    [InlineData("exa mple.com")]
    [InlineData("example.com;reboot")]
    [InlineData("1.2.3.999")]
    [InlineData("01.2.3.4")]
    [InlineData("host/24")]
    [InlineData("fe80::1%eth0")]
    public void Invalid_hosts_are_refused(string input)
    {
        Assert.False(HostSpec.TryParse(input, out _, out var error));
        Assert.NotEmpty(error);
        var ex = Assert.Throws<QubesFirewallException>(() => HostSpec.Parse(input));
        Assert.Equal("InvalidDstHost", ex.ErrorId);
    }

    [Theory]
    [InlineData("443", 443, 443, "443", "443-443")]
    [InlineData("080", 80, 80, "80", "80-80")]
    [InlineData("8000-8100", 8000, 8100, "8000-8100", "8000-8100")]
    [InlineData("0", 0, 0, "0", "0-0")]
    [InlineData("65535", 65535, 65535, "65535", "65535-65535")]
    [InlineData("22-22", 22, 22, "22", "22-22")]
    public void Ports_are_normalised(string input, int first, int last, string stored, string text)
    {
        var range = PortRange.Parse(input);
        Assert.Equal(new PortRange(first, last), range);
        Assert.Equal(stored, range.ToString());
        Assert.Equal(text, range.RangeText);
    }

    [Theory]
    [InlineData("65536")]
    [InlineData("70000")]
    [InlineData("100-50")]
    [InlineData("1-2-3")]
    [InlineData("-5")]
    [InlineData("+80")]
    [InlineData("80 ")]
    [InlineData("")]
    [InlineData("٨٠")]
    [InlineData("99999999999999999999")]
    public void Invalid_ports_are_refused(string input)
    {
        var ex = Assert.Throws<QubesFirewallException>(() => PortRange.Parse(input));
        Assert.Equal("InvalidDstPorts", ex.ErrorId);
    }

    [Fact]
    public void Ports_need_tcp_or_udp()
    {
        Assert.Equal("PortsNeedTcpOrUdp", Assert.Throws<QubesFirewallException>(() => FirewallRule.Create(RuleAction.Accept, dstPorts: "80")).ErrorId);
        Assert.Equal("PortsNeedTcpOrUdp", Assert.Throws<QubesFirewallException>(() => FirewallRule.Create(RuleAction.Accept, RuleProtocol.Icmp, dstPorts: "80")).ErrorId);
        Assert.NotNull(FirewallRule.Create(RuleAction.Accept, RuleProtocol.Udp, dstPorts: "53"));
    }

    [Fact]
    public void Icmp_type_needs_icmp_and_0_to_255()
    {
        Assert.Equal("IcmpTypeNeedsIcmp", Assert.Throws<QubesFirewallException>(() => FirewallRule.Create(RuleAction.Accept, RuleProtocol.Tcp, icmpType: 8)).ErrorId);
        Assert.Equal("InvalidIcmpType", Assert.Throws<QubesFirewallException>(() => FirewallRule.Create(RuleAction.Accept, RuleProtocol.Icmp, icmpType: 256)).ErrorId);
        Assert.Equal(255, FirewallRule.Create(RuleAction.Accept, RuleProtocol.Icmp, icmpType: 255).IcmpType);
    }

    [Theory]
    [InlineData("intranet https")]
    [InlineData("a:b;c,d.e/f-g_h[i]")]
    [InlineData("UPPER lower 0123")]
    public void Comments_of_qubesd_characters_are_accepted(string comment) =>
        Assert.Equal(comment, FirewallRule.Create(RuleAction.Drop, comment: comment).Comment);

    [Theory]
    [InlineData("it's")]
    [InlineData("say \"hi\"")]
    [InlineData("line\nbreak")]
    [InlineData("tab\there")]
    [InlineData("café")]
    [InlineData("Ωmega")]
    [InlineData("a=b")]
    [InlineData("50%")]
    [InlineData("$(touch x)")]
    [InlineData("`id`")]
    public void Comments_with_other_characters_are_refused(string comment)
    {
        var ex = Assert.Throws<QubesFirewallException>(() => FirewallRule.Create(RuleAction.Drop, comment: comment));
        Assert.Equal("InvalidComment", ex.ErrorId);
    }

    [Theory]
    [InlineData(true, "action=accept")]
    [InlineData(true, "action=drop comment=final")]
    [InlineData(true, "action=drop expire=1900000000")]
    [InlineData(false, "action=accept specialtarget=dns")]
    [InlineData(false, "action=accept proto=icmp")]
    [InlineData(false, "action=drop dsthost=example.com")]
    public void Catch_all_is_a_rule_with_only_an_action(bool catchAll, string text) =>
        Assert.Equal(catchAll, RuleText.Parse(text).IsCatchAll);
}
