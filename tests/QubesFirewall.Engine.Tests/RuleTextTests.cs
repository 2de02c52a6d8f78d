using QubesFirewall.Engine;
using QubesFirewall.Engine.Model;

namespace QubesFirewall.Engine.Tests;

public class RuleTextTests
{
    [Theory]
    // input (any key order) → what qubesd's admin.vm.firewall.Get returns
    [InlineData("action=accept dst4=10.1.2.0/24 proto=tcp dstports=443 expire=1900000000 comment=intranet https",
                "action=accept expire=1900000000 dst4=10.1.2.0/24 proto=tcp dstports=443-443 comment=intranet https")]
    [InlineData("proto=tcp action=accept dsthost=10.1.2.3", "action=accept dst4=10.1.2.3/32 proto=tcp")]
    [InlineData("action=accept dsthost=qubes-os.org", "action=accept dsthost=qubes-os.org")]
    [InlineData("action=accept dst6=2001:db8::/64 proto=udp dstports=53-53", "action=accept dst6=2001:db8::/64 proto=udp dstports=53-53")]
    [InlineData("action=accept specialtarget=dns", "action=accept specialtarget=dns")]
    [InlineData("action=accept proto=icmp icmptype=8", "action=accept proto=icmp icmptype=8")]
    [InlineData("icmptype=08 proto=icmp action=drop", "action=drop proto=icmp icmptype=8")]
    [InlineData("action=drop", "action=drop")]
    [InlineData("  action=accept   proto=tcp  dstports=080  ", "action=accept proto=tcp dstports=80-80")]
    [InlineData("action=accept comment=", "action=accept")]
    [InlineData("action=accept comment=has  two  spaces ", "action=accept comment=has  two  spaces ")]
    public void Parses_and_formats_like_qubesd(string input, string canonical)
    {
        var rule = RuleText.Parse(input);
        Assert.Equal(canonical, rule.Text);
        Assert.Equal(canonical, RuleText.Parse(canonical).Text);
    }

    [Fact]
    public void A_copy_made_with_with_has_its_own_text_and_the_text_takes_no_part_in_equality()
    {
        var rule = RuleText.Parse("action=accept dst4=10.1.2.0/24 proto=tcp dstports=443 expire=1900000000 comment=intranet");
        Assert.Equal("action=accept expire=1900000000 dst4=10.1.2.0/24 proto=tcp dstports=443-443 comment=intranet", rule.Text);
        // Each property the text shows, changed in a copy of a rule whose text was already made.
        Assert.Equal("action=drop expire=1900000000 dst4=10.1.2.0/24 proto=tcp dstports=443-443 comment=intranet", (rule with { Action = RuleAction.Drop }).Text);
        Assert.Equal("action=accept dst4=10.1.2.0/24 proto=tcp dstports=443-443 comment=intranet", (rule with { Expire = null }).Text);
        Assert.Equal("action=accept expire=1900000000 proto=tcp dstports=443-443 comment=intranet", (rule with { DstHost = null }).Text);
        Assert.Equal("action=accept expire=1900000000 dst4=10.1.2.0/24 proto=udp dstports=443-443 comment=intranet", (rule with { Protocol = RuleProtocol.Udp }).Text);
        Assert.Equal("action=accept expire=1900000000 dst4=10.1.2.0/24 proto=tcp dstports=80-81 comment=intranet", (rule with { DstPorts = new PortRange(80, 81) }).Text);
        Assert.Equal("action=accept expire=1900000000 dst4=10.1.2.0/24 proto=tcp dstports=443-443", (rule with { Comment = null }).Text);
        var icmp = RuleText.Parse("action=accept proto=icmp");
        Assert.Equal("action=accept proto=icmp", icmp.Text);
        Assert.Equal("action=accept proto=icmp icmptype=8", (icmp with { IcmpType = 8 }).Text);
        Assert.Equal("action=accept proto=icmp specialtarget=dns", (icmp with { SpecialTarget = SpecialTarget.Dns }).Text);

        // Equal rules stay equal, with the same hash code, whether or not either text was made.
        var fresh = RuleText.Parse("action=accept dst4=10.1.2.0/24 proto=tcp dstports=443 expire=1900000000 comment=intranet");
        Assert.Equal(rule, fresh);
        Assert.Equal(rule.GetHashCode(), fresh.GetHashCode());
        Assert.NotEqual(rule, rule with { Comment = "other" });
        Assert.Equal(rule, (rule with { Comment = "other" }) with { Comment = "intranet" });
    }

    [Fact]
    public void Relative_expire_is_seconds_from_now()
    {
        var now = DateTimeOffset.FromUnixTimeSeconds(1_800_000_000);
        Assert.Equal(1_800_005_000, RuleText.Parse("action=accept expire=+5000", now).Expire);
    }

    [Fact]
    public void QubesDb_form_has_no_expire_or_comment()
    {
        var rule = RuleText.Parse("action=accept expire=1900000000 dst4=10.1.2.0/24 proto=tcp dstports=443-443 comment=intranet");
        Assert.Equal("action=accept dst4=10.1.2.0/24 proto=tcp dstports=443-443", RuleText.FormatForQubesDb(rule));
    }

    [Theory]
    [InlineData("dsthost=1.2.3.4/33 action=accept")]
    [InlineData("action=accept proto=tcp dstports=70000")]
    [InlineData("action=accept proto=tcp icmptype=8")]
    [InlineData("action=forward")]
    [InlineData("action=accept action=drop")]
    [InlineData("action=accept dst4=1.2.3.4 dsthost=example.com")]
    [InlineData("action=accept dst4=2001:db8::1")]
    [InlineData("action=accept dst6=1.2.3.4")]
    [InlineData("action=accept frobnicate=1")]
    [InlineData("proto=tcp")]
    [InlineData("")]
    [InlineData("action=accept dsthost=")]
    [InlineData("action=accept comment=it's")]
    [InlineData("action=accept comment=\"quoted\"")]
    [InlineData("action=accept comment=naïve")]
    [InlineData("action=accept comment=two\nlines")]
    [InlineData("action=accept;reboot")]
    [InlineData("action=accept dsthost=$(touch/x)")]
    [InlineData("action=accept expire=soon")]
    [InlineData("action=accept expire=-5")]
    [InlineData("accept")]
    public void Invalid_text_is_refused_with_a_reason(string line)
    {
        Assert.False(RuleText.TryParse(line, out var rule, out var error));
        Assert.Null(rule);
        Assert.StartsWith("Invalid rule", error);
    }
    [Fact]
    public void A_copy_of_a_validated_rule_is_validated_again()
    {
        var rule = RuleText.Parse("action=accept proto=tcp dstports=443 comment=intranet");
        rule.Validate();
        // Each copy changes what the check looks at; the passed check of the rule it was copied from must not carry over.
        Assert.Equal(ErrorIds.InvalidComment, Assert.Throws<QubesFirewallException>(() => (rule with { Comment = "a<b" }).Validate()).ErrorId);
        Assert.Equal(ErrorIds.PortsNeedTcpOrUdp, Assert.Throws<QubesFirewallException>(() => (rule with { Protocol = null }).Validate()).ErrorId);
        Assert.Equal(ErrorIds.InvalidDstPorts, Assert.Throws<QubesFirewallException>(() => (rule with { DstPorts = new PortRange(9, 8) }).Validate()).ErrorId);
        Assert.Equal(ErrorIds.InvalidExpire, Assert.Throws<QubesFirewallException>(() => (rule with { Expire = -1 }).Validate()).ErrorId);
        Assert.Equal(ErrorIds.InvalidFirewallRule, Assert.Throws<QubesFirewallException>(() => (rule with { Problems = ["read from an old file"] }).Validate()).ErrorId);
        Assert.Equal(ErrorIds.InvalidFirewallXml, Assert.Throws<QubesFirewallException>(() => (rule with { UnknownProperties = [new("a b", "x")] }).Validate()).ErrorId);
        var icmp = RuleText.Parse("action=accept proto=icmp");
        icmp.Validate();
        Assert.Equal(ErrorIds.InvalidIcmpType, Assert.Throws<QubesFirewallException>(() => (icmp with { IcmpType = 300 }).Validate()).ErrorId);
        // And a valid copy still passes.
        (rule with { Comment = "other" }).Validate();
    }

    [Fact]
    public void Rules_are_the_same_by_text_whether_or_not_their_texts_were_made()
    {
        string[] lines =
        [
            "action=accept dst4=10.1.2.0/24 proto=tcp dstports=443 comment=intranet",
            "proto=tcp dstports=443-443 action=accept dsthost=10.1.2.0/24 comment=intranet",
            "action=accept dst4=10.1.2.0/24 proto=tcp dstports=443 comment=intranet2",
            "action=accept dst4=10.1.2.0/24 proto=udp dstports=443",
            "action=drop expire=1900000000",
            "action=drop expire=1900000001",
            "action=accept dsthost=example.com comment=" + new string('x', 600),
            "action=accept dsthost=example.com comment=" + new string('x', 601),
            "action=accept proto=icmp icmptype=8",
            "action=accept specialtarget=dns",
        ];
        var comparer = RuleText.SameTextComparer.Instance;
        foreach (var a in lines)
        {
            foreach (var b in lines)
            {
                var (x, y) = (RuleText.Parse(a), RuleText.Parse(b));
                var same = RuleText.Parse(a).Text == RuleText.Parse(b).Text;
                Assert.Equal(same, comparer.Equals(x, y));
                if (same) Assert.Equal(comparer.GetHashCode(x), comparer.GetHashCode(y));
                _ = x.Text; // one text made, the other not
                Assert.Equal(same, comparer.Equals(x, y));
                Assert.Equal(same, comparer.Equals(y, x));
                if (same) Assert.Equal(comparer.GetHashCode(x), comparer.GetHashCode(y));
            }
        }
    }
}
