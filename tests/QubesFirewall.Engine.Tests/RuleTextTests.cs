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
}
