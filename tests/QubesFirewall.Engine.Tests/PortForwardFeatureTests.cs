using QubesFirewall.Engine.Model;

namespace QubesFirewall.Engine.Tests;

/// <summary>The qubesfirewall.forward.* feature: name and value grammar, both ways, strict.</summary>
public sealed class PortForwardFeatureTests
{
    [Fact]
    public void A_full_declaration_round_trips_in_canonical_form()
    {
        var f = PortForward.Create("work", ForwardProtocol.Tcp, 443, 8443, ForwardType.External,
            ["192.168.1.0/24", "10.0.0.5", "2001:db8::/32"], "ens6", 1900000000, "web server: main [v2]");
        Assert.Equal("qubesfirewall.forward.tcp.443", f.FeatureName);
        Assert.Equal("target=8443 type=external allow=192.168.1.0/24,10.0.0.5/32,2001:db8::/32 iface=ens6 expire=1900000000 comment=web server: main [v2]", f.FeatureValue);
        var back = PortForwardFeature.Parse("work", f.FeatureName, f.FeatureValue);
        Assert.Equal(f.FeatureValue, back.FeatureValue);
        Assert.Equal(f.FeatureName, back.FeatureName);
        Assert.Equal(f.AllowFrom, back.AllowFrom);
        Assert.Equal(("ens6", 1900000000L, "web server: main [v2]"), (back.Interface, back.Expire!.Value, back.Comment));
    }

    [Fact]
    public void A_minimal_declaration_has_only_target_and_type()
    {
        var f = PortForward.Create("work", ForwardProtocol.Udp, 51820, type: ForwardType.Internal);
        Assert.Equal("qubesfirewall.forward.udp.51820", f.FeatureName);
        Assert.Equal("target=51820 type=internal", f.FeatureValue);
        Assert.True(f.IsOpenToEveryone);
        var back = PortForwardFeature.Parse("work", f.FeatureName, f.FeatureValue);
        Assert.Equal(f, back with { AllowFrom = f.AllowFrom });
        Assert.Empty(back.AllowFrom);
    }

    [Fact]
    public void Keys_before_the_comment_may_come_in_any_order_and_are_written_back_canonically()
    {
        var f = PortForwardFeature.Parse("work", "qubesfirewall.forward.tcp.22", "type=internal expire=1900000000 target=2222 comment=ssh from home");
        Assert.Equal(2222, f.TargetPort);
        Assert.Equal(ForwardType.Internal, f.Type);
        Assert.Equal("ssh from home", f.Comment);
        Assert.Equal("target=2222 type=internal expire=1900000000 comment=ssh from home", f.FeatureValue);
    }

    [Theory]
    [InlineData("080", 80)]
    [InlineData("00443", 443)]
    [InlineData("65535", 65535)]
    [InlineData("1", 1)]
    public void Ports_given_as_text_are_normalized(string text, int expected)
    {
        Assert.Equal(expected, PortForward.ParsePort(text));
        Assert.Equal($"qubesfirewall.forward.tcp.{expected}", PortForward.Create("work", ForwardProtocol.Tcp, PortForward.ParsePort(text)).FeatureName);
    }

    [Theory]
    [InlineData("0")]
    [InlineData("65536")]
    [InlineData("-1")]
    [InlineData("80-81")]
    [InlineData("http")]
    [InlineData("")]
    [InlineData(" 80")]
    public void Bad_port_text_is_refused(string text) =>
        Assert.Equal("InvalidForwardPort", Assert.Throws<QubesFirewallException>(() => PortForward.ParsePort(text)).ErrorId);

    [Theory]
    [InlineData("qubesfirewall.forward.tcp.443", true, ForwardProtocol.Tcp, 443)]
    [InlineData("qubesfirewall.forward.udp.1", true, ForwardProtocol.Udp, 1)]
    [InlineData("qubesfirewall.forward.tcp.0443", false, ForwardProtocol.Tcp, 0)]
    [InlineData("qubesfirewall.forward.TCP.443", false, ForwardProtocol.Tcp, 0)]
    [InlineData("qubesfirewall.forward.icmp.8", false, ForwardProtocol.Tcp, 0)]
    [InlineData("qubesfirewall.forward.tcp.70000", false, ForwardProtocol.Tcp, 0)]
    [InlineData("qubesfirewall.forward.tcp", false, ForwardProtocol.Tcp, 0)]
    [InlineData("qubesfirewall.forward.tcp.443.x", false, ForwardProtocol.Tcp, 0)]
    [InlineData("qubesfirewall.link.tcp.443", false, ForwardProtocol.Tcp, 0)]
    public void Feature_names_are_canonical(string name, bool valid, ForwardProtocol protocol, int port)
    {
        Assert.Equal(valid, PortForwardFeature.TryParseName(name, out var p, out var n));
        if (valid) Assert.Equal((protocol, port), (p, n));
    }

    [Fact]
    public void A_lenient_name_read_finds_hand_written_variants_for_removal()
    {
        Assert.True(PortForwardFeature.TryParseName("qubesfirewall.forward.TCP.0443", out var p, out var n, lenient: true));
        Assert.Equal((ForwardProtocol.Tcp, 443), (p, n));
    }

    [Theory]
    [InlineData("", "target= is missing")]
    [InlineData("type=external", "target= is missing")]
    [InlineData("target=80", "type= is missing")]
    [InlineData("target=80 type=both", "type=")]
    [InlineData("target=080 type=external", "leading zeros")]
    [InlineData("target=0 type=external", "1-65535")]
    [InlineData("target=80 type=external extra=1", "unknown key 'extra'")]
    [InlineData("target=80 type=external target=81", "given twice")]
    [InlineData("target=80  type=external", "exactly one space")]
    [InlineData("target=80 type=external ", "exactly one space")]
    [InlineData(" target=80 type=external", "exactly one space")]
    [InlineData("target=80 type=external allow=", "allow= has no value")]
    [InlineData("target=80 type=external allow=10.0.0.0/8,", "empty entry")]
    [InlineData("target=80 type=external allow=10.0.0.1/8", "Did you mean 10.0.0.0/8")]
    [InlineData("target=80 type=external allow=10.0.0.1", "CIDR form")]
    [InlineData("target=80 type=external allow=example.com", "host names")]
    [InlineData("target=80 type=external allow=10.0.0.0/33", "prefix")]
    [InlineData("target=80 type=external iface=vif3.0", "vif")]
    [InlineData("target=80 type=external iface=lo", "loopback")]
    [InlineData("target=80 type=external iface=averyveryverylongname", "interface name")]
    [InlineData("target=80 type=external iface=en$(x)", "interface name")]
    [InlineData("target=80 type=external expire=soon", "Unix seconds")]
    [InlineData("target=80 type=external expire=0", "Unix time")]
    [InlineData("target=80 type=external comment=", "comment= is empty")]
    [InlineData("target=80 type=external comment=it's", "character")]
    [InlineData("target=80 type=external comment=a\"b", "character")]
    [InlineData("target=80 type=external comment= padded", "blank")]
    [InlineData("target=80 noequals type=external", "not a key=value word")]
    public void Bad_values_are_refused_with_the_reason(string value, string reason)
    {
        var ex = Assert.Throws<QubesFirewallException>(() => PortForwardFeature.Parse("work", "qubesfirewall.forward.tcp.80", value));
        Assert.Equal("InvalidPortForwardFeature", ex.ErrorId);
        Assert.Contains(reason, ex.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("192.168.1.0/24", "192.168.1.0/24")]
    [InlineData("10.1.2.3", "10.1.2.3/32")]
    [InlineData("0.0.0.0/0", "0.0.0.0/0")]
    [InlineData("fd00::/8", "fd00::/8")]
    [InlineData("2001:db8::1", "2001:db8::1/128")]
    public void Sources_are_stored_as_networks_with_their_prefix(string given, string stored) =>
        Assert.Equal(stored, PortForward.ParseNetwork(given).Value);

    [Theory]
    [InlineData("192.168.1.1/24", "192.168.1.0/24")]
    [InlineData("10.255.0.0/8", "10.0.0.0/8")]
    [InlineData("2001:db8::1/32", "2001:db8::/32")]
    public void Host_bits_under_the_prefix_are_refused_with_the_network_to_use(string given, string suggested)
    {
        var ex = Assert.Throws<QubesFirewallException>(() => PortForward.ParseNetwork(given));
        Assert.Equal("InvalidAllowFrom", ex.ErrorId);
        Assert.Contains(suggested, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Sources_accept_comma_lists_and_drop_duplicates()
    {
        var f = PortForward.Create("work", ForwardProtocol.Tcp, 80, allowFrom: ["10.0.0.0/8, 192.168.1.0/24", "10.0.0.0/8"]);
        Assert.Equal(["10.0.0.0/8", "192.168.1.0/24"], f.AllowFrom.Select(h => h.Value));
        Assert.False(f.IsOpenToEveryone);
        Assert.True(PortForward.Create("work", ForwardProtocol.Tcp, 80, allowFrom: ["0.0.0.0/0"]).IsOpenToEveryone);
    }

    [Fact]
    public void Too_many_sources_are_refused()
    {
        var many = Enumerable.Range(0, PortForward.MaxAllowFrom + 1).Select(i => $"10.{i / 256}.{i % 256}.0/24");
        Assert.Equal("TooManySources", Assert.Throws<QubesFirewallException>(() => PortForward.Create("work", ForwardProtocol.Tcp, 80, allowFrom: many)).ErrorId);
    }

    [Theory]
    [InlineData("ens6")]
    [InlineData("wlp0s0f0")]
    [InlineData("eth0")]
    [InlineData("tun0")]
    [InlineData("wg-home.1")]
    [InlineData("abcdefghijklmno")]
    public void Interface_names_that_nft_matches_literally_are_accepted(string name) => Assert.Equal(name, PortForward.ValidateInterface(name));

    [Theory]
    [InlineData("")]
    [InlineData("abcdefghijklmnop")]
    [InlineData("ens*")]
    [InlineData("ens 6")]
    [InlineData("ens\"6")]
    [InlineData("lo")]
    [InlineData("vif12.0")]
    [InlineData("..")]
    [InlineData("eth0\n")]
    public void Other_interface_names_are_refused(string name) =>
        Assert.Equal("InvalidInterface", Assert.Throws<QubesFirewallException>(() => PortForward.ValidateInterface(name)).ErrorId);

    [Fact]
    public void Create_validates_every_field()
    {
        Assert.Equal("InvalidQubeName", Assert.Throws<QubesFirewallException>(() => PortForward.Create("bad name", ForwardProtocol.Tcp, 80)).ErrorId);
        Assert.Equal("InvalidForwardPort", Assert.Throws<QubesFirewallException>(() => PortForward.Create("work", ForwardProtocol.Tcp, 0)).ErrorId);
        Assert.Equal("InvalidForwardPort", Assert.Throws<QubesFirewallException>(() => PortForward.Create("work", ForwardProtocol.Tcp, 80, 70000)).ErrorId);
        Assert.Equal("InvalidComment", Assert.Throws<QubesFirewallException>(() => PortForward.Create("work", ForwardProtocol.Tcp, 80, comment: "a;b`c")).ErrorId);
        Assert.Equal("InvalidComment", Assert.Throws<QubesFirewallException>(() => PortForward.Create("work", ForwardProtocol.Tcp, 80, comment: new string('x', 201))).ErrorId);
        Assert.Equal("InvalidExpire", Assert.Throws<QubesFirewallException>(() => PortForward.Create("work", ForwardProtocol.Tcp, 80, expire: -5)).ErrorId);
    }

    [Fact]
    public void Expiry_is_read_from_the_declaration()
    {
        var f = PortForward.Create("work", ForwardProtocol.Tcp, 80, expire: 1000);
        Assert.True(f.IsExpiredAt(DateTimeOffset.FromUnixTimeSeconds(1001)));
        Assert.False(f.IsExpiredAt(DateTimeOffset.FromUnixTimeSeconds(1000)));
    }

    [Fact]
    public void Declarations_are_read_from_features_with_invalid_ones_reported()
    {
        var qube = new Qube
        {
            Name = "work",
            Features = new Dictionary<string, string>
            {
                ["qubesfirewall.forward.tcp.443"] = "target=443 type=external",
                ["qubesfirewall.forward.udp.53"] = "target=53 type=sideways",
                ["qubesfirewall.link.x"] = "ignored",
                ["gui"] = "1",
            },
        };
        var decls = PortForwardDeclaration.Read(qube).ToList();
        Assert.Equal(["qubesfirewall.forward.tcp.443", "qubesfirewall.forward.udp.53"], decls.Select(d => d.FeatureName));
        Assert.True(decls[0].IsValid);
        Assert.False(decls[1].IsValid);
        Assert.Contains("type=", decls[1].Problem);
    }
}
