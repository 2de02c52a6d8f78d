using QubesFirewall.Engine.Configuration;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.Engine.Tests.Configuration;

/// <summary>The configuration file: every kind of declaration round-trips through both formats; hostile files are refused with their line.</summary>
public sealed class ConfigurationFileTests
{
    private static NetworkConfiguration Everything() => new(
    [
        new QubeConfiguration
        {
            Name = "sys-vpn",
            NetVM = new NetVmSetting(NetVmMode.Qube, "sys-firewall"),
            IPv6 = IPv6Setting.Disabled,
            Rules = [RuleText.Parse("action=accept")],
            Forwards = [PortForward.Create("sys-vpn", ForwardProtocol.Udp, 51820, type: ForwardType.Internal, allowFrom: ["10.137.0.0/16"], @interface: "tun0")],
            Links = [],
            Bindings = [],
        },
        new QubeConfiguration { Name = "vault", NetVM = NetVmSetting.None, IPv6 = IPv6Setting.Inherit, Rules = [RuleText.Parse("action=drop")] },
        new QubeConfiguration
        {
            Name = "work",
            NetVM = NetVmSetting.Default,
            IPv6 = IPv6Setting.Enabled,
            Rules =
            [
                RuleText.Parse("action=accept specialtarget=dns"),
                RuleText.Parse("action=accept proto=icmp icmptype=8"),
                RuleText.Parse("action=accept expire=1900000000 dst6=2001:db8::/32 proto=tcp dstports=443-443 comment=v6: [ok], see a/b_c-d."),
                RuleText.Parse("action=accept dsthost=example.com proto=udp dstports=1000-2000"),
                RuleText.Parse("action=drop"),
            ],
            Forwards =
            [
                PortForward.Create("work", ForwardProtocol.Tcp, 443, 8443, ForwardType.External, ["192.168.1.0/24", "2001:db8::/64"], "ens6", 1900000000, "web server"),
                PortForward.Create("work", ForwardProtocol.Tcp, 8080),
            ],
            Links =
            [
                InterVmLink.Create("work", "db", ForwardProtocol.Tcp, LinkPorts.Parse("5432")),
                InterVmLink.Create("work", "db", ForwardProtocol.Udp, LinkPorts.All),
                InterVmLink.Create("work", "personal", ForwardProtocol.Tcp, LinkPorts.Parse("8000-8100")),
            ],
            Bindings =
            [
                TcpBinding.Create("work", "mail", 444, 10444, permanent: true),
                TcpBinding.Create("work", "mail", 993),
            ],
        },
    ]);

    [Theory]
    [InlineData(ConfigurationFormat.Psd1)]
    [InlineData(ConfigurationFormat.Json)]
    public void Every_kind_of_declaration_round_trips(ConfigurationFormat format)
    {
        var original = Everything();
        var text = ConfigurationWriter.Write(original, format);
        var read = ConfigurationReader.Read(text, format);
        Assert.Equal(text, ConfigurationWriter.Write(read, format));
        Assert.Equal(ConfigurationWriter.WritePsd1(original), ConfigurationWriter.WritePsd1(read));
        var work = read.Find("work")!;
        Assert.Equal(NetVmMode.Default, work.NetVM!.Mode);
        Assert.Equal(NetVmMode.None, read.Find("vault")!.NetVM!.Mode);
        Assert.Equal(new NetVmSetting(NetVmMode.Qube, "sys-firewall"), read.Find("sys-vpn")!.NetVM);
        Assert.Equal([IPv6Setting.Disabled, IPv6Setting.Inherit, IPv6Setting.Enabled], read.Qubes.Select(q => q.IPv6!.Value));
        Assert.Equal(original.Find("work")!.Rules!.Select(r => r.Text), work.Rules!.Select(r => r.Text));
        Assert.Equal(original.Find("work")!.Forwards!.Select(f => f.FeatureValue), work.Forwards!.Select(f => f.FeatureValue));
        Assert.Equal(original.Find("sys-vpn")!.Forwards![0].FeatureValue, read.Find("sys-vpn")!.Forwards![0].FeatureValue);
        Assert.Equal(["work -> db tcp/5432", "work -> db udp/all", "work -> personal tcp/8000-8100"], work.Links!.Select(l => l.Text));
        Assert.Equal(["localport=10444 permanent=yes", "localport=993 permanent=no"], work.Bindings!.Select(b => b.FeatureValue));
        Assert.Null(read.Find("vault")!.Forwards); // not in the file: not managed
    }

    [Fact]
    public void The_psd1_form_is_written_by_hand_here()
    {
        var text = ConfigurationWriter.WritePsd1(new NetworkConfiguration(
        [
            new QubeConfiguration
            {
                Name = "work",
                NetVM = NetVmSetting.Default,
                Rules = [RuleText.Parse("action=accept comment=all")],
                Forwards = [PortForward.Create("work", ForwardProtocol.Tcp, 8080)],
                Links = [InterVmLink.Create("work", "db", ForwardProtocol.Tcp, LinkPorts.All)],
                Bindings = [TcpBinding.Create("work", "mail", 444)],
            },
        ]));
        Assert.Equal("""
            # Qubes network configuration: Export-QubeNetworkConfiguration wrote it; Test-QubeNetworkConfiguration
            # compares it with a system, Invoke-QubeNetworkConfiguration makes a system match it. Read as data only.
            @{
                Version = 1
                Qubes = @{
                    'work' = @{
                        NetVM = '(default)'
                        Rules = @(
                            'action=accept comment=all'
                        )
                        Forwards = @(
                            @{ Protocol = 'tcp'; Port = 8080; TargetPort = 8080; Type = 'External'; AllowFrom = 'Any' }
                        )
                        Links = @(
                            @{ To = 'db'; Protocol = 'tcp'; Port = 'all' }
                        )
                        Bindings = @(
                            @{ To = 'mail'; Port = 444; LocalPort = 444; Permanent = $false }
                        )
                    }
                }
            }

            """.Replace("\r", "", StringComparison.Ordinal), text);
    }

    [Fact]
    public void Comments_separators_and_case_of_keys_are_read_as_PowerShell_reads_them()
    {
        var config = ConfigurationReader.Read("""
            <# a block
               comment #>
            @{ version = 1 # trailing comment
               qubes = @{ work = @{ netvm = 'sys-net'; ipv6 = 'enabled'; rules = @('action=accept proto=tcp', 'action=drop') } }
            }
            """, ConfigurationFormat.Psd1);
        var work = Assert.Single(config.Qubes);
        Assert.Equal(("sys-net", IPv6Setting.Enabled, 2), (work.NetVM!.Name, work.IPv6!.Value, work.Rules!.Count));
    }

    private static string Wrap(string qubeBody, string name = "work") =>
        "@{\n    Version = 1\n    Qubes = @{\n        '" + name + "' = @{\n" + qubeBody + "\n        }\n    }\n}\n";

    [Theory]
    // code, not data
    [InlineData("            NetVM = \"$(Remove-Item -Recurse /)\"", 5, "double-quoted strings are not read")]
    [InlineData("            NetVM = $env:NETVM", 5, "variables are not read")]
    [InlineData("            NetVM = (Get-Content /etc/passwd)", 5, "unexpected '('")]
    [InlineData("            NetVM = Get-Content", 5, "unexpected 'G'")]
    [InlineData("            NetVM = { Remove-Item / }", 5, "unexpected '{'")]
    [InlineData("            NetVM = [string]'sys-net'", 5, "unexpected '['")]
    [InlineData("            NetVM = 'sys-net' + 'x'", 5, "after the value of 'NetVM'")]
    [InlineData("            NetVM = @'\nsys-net\n'@", 5, "unexpected '@'")]
    [InlineData("            NetVM = 'sys-net'; Rules = @('action=accept'; 'action=drop')", 5, "after an item of the array")]
    [InlineData("            Rules = @('action=accept'), @('action=drop')", 5, "after the value of 'Rules'")]
    [InlineData("            Rules = @(\n                'action=accept'\n                0x10\n            )", 7, "numbers are plain decimal integers")]
    // values
    [InlineData("            NetVM = '../sys-net'", 5, "use '(default)', '' (no network) or a qube's name")]
    [InlineData("            NetVM = 'it''s'", 5, "NetVM of qube 'work' is 'it's'")]
    [InlineData("            NetVM = 'work'", 5, "names the qube itself")]
    [InlineData("            NetVM = 'dom0'", 5, "dom0")]
    [InlineData("            NetVM = 'sys-n\u00e9t'", 5, "printable ASCII only")]
    [InlineData("            NetVM = 'sys-\u2019net'", 5, "printable ASCII only")]
    [InlineData("            IPv6 = 'yes'", 5, "use Enabled, Disabled, Inherit")]
    [InlineData("            IPv6 = 1", 5, "a number; a string is expected")]
    [InlineData("            Rules = 'action=drop'", 5, "a list (@( ) or a JSON array) is expected")]
    [InlineData("            Rules = @()", 5, "is empty")]
    [InlineData("            Rules = @(\n                'action=accept'\n                'action=forward'\n            )", 7, "action must be accept or drop")]
    [InlineData("            Rules = @(\n                'action=accept dsthost=a;reboot'\n            )", 6, "Invalid rule 'action=accept dsthost=a;reboot'")]
    [InlineData("            Rules = @(\n                'action=drop'\n                'action=drop'\n            )", 7, "listed twice (first on line 6)")]
    [InlineData("            Rules = @(\n                'action=accept expire=+3600'\n            )", 6, "expire=+SECONDS")]
    [InlineData("            Forwards = @(\n                @{ Protocol = 'tcp'; Port = 443 }\n            )", 6, "has no AllowFrom")]
    [InlineData("            Forwards = @(\n                @{ Protocol = 'tcp'; Port = 443; AllowFrom = @('Any', '10.0.0.0/8') }\n            )", 6, "'Any' stands alone")]
    [InlineData("            Forwards = @(\n                @{ Protocol = 'tcp'; Port = 443; AllowFrom = @('10.0.0.1/8') }\n            )", 6, "forward 1 of qube 'work'")]
    [InlineData("            Forwards = @(\n                @{ Protocol = 'tcp'; Port = 70000; AllowFrom = 'Any' }\n            )", 6, "ports are 1-65535")]
    [InlineData("            Forwards = @(\n                @{ Protocol = 'sctp'; Port = 1; AllowFrom = 'Any' }\n            )", 6, "use Tcp, Udp")]
    [InlineData("            Forwards = @(\n                @{ Protocol = 'tcp'; Port = 1; AllowFrom = 'Any'; Interface = 'vif3.0' }\n            )", 6, "is a vif interface")]
    [InlineData("            Forwards = @(\n                @{ Protocol = 'tcp'; Port = 1; AllowFrom = 'Any'; Comment = 'a=b' }\n            )", 6, "forward 1 of qube 'work'")]
    [InlineData("            Forwards = @(\n                @{ Protocol = 'tcp'; Port = 1; AllowFrom = 'Any' }\n                @{ Protocol = 'tcp'; Port = 1; AllowFrom = '10.0.0.0/8' }\n            )", 7, "the same forward as the one on line 6")]
    [InlineData("            Links = @(\n                @{ To = 'work'; Protocol = 'tcp'; Port = 1 }\n            )", 6, "cannot be linked to itself")]
    [InlineData("            Links = @(\n                @{ To = 'db'; Protocol = 'tcp'; Port = '0-5' }\n            )", 6, "Invalid port '0-5'")]
    [InlineData("            Links = @(\n                @{ To = 'db'; Protocol = 'tcp' }\n            )", 6, "has no Port")]
    [InlineData("            Bindings = @(\n                @{ To = 'dom0'; Port = 22 }\n            )", 6, "cannot lead to dom0")]
    [InlineData("            Bindings = @(\n                @{ To = 'mail'; Port = 22; Permanent = 'yes' }\n            )", 6, "$true or $false")]
    // structure
    [InlineData("            Firewall = @('action=drop')", 5, "unknown key 'Firewall' in qube 'work' (known: NetVM, IPv6, Rules, Forwards, Links, Bindings)")]
    [InlineData("            Forwards = @(\n                @{ Protocol = 'tcp'; Port = 1; AllowFrom = 'Any'; Source = 'x' }\n            )", 6, "unknown key 'Source' in forward 1 of qube 'work'")]
    [InlineData("            NetVM = 'sys-net'\n            netvm = 'sys-firewall'", 6, "the key 'netvm' is given twice (first on line 5)")]
    [InlineData("            NetVM = 'sys-net\n'", 5, "must end on the line it starts on")]
    [InlineData("            NetVM = 'sys-net'\u0007", 5, "U+0007")]
    public void A_hostile_psd1_file_is_refused_with_its_line(string body, int line, string message)
    {
        var ex = Assert.Throws<QubesFirewallException>(() => ConfigurationReader.Read(Wrap(body), ConfigurationFormat.Psd1));
        Assert.Equal("InvalidConfiguration", ex.ErrorId);
        Assert.StartsWith($"line {line}: ", ex.Message);
        Assert.Contains(message, ex.Message);
    }

    [Theory]
    [InlineData("@{ Version = 2; Qubes = @{} }", "this module reads version 1")]
    [InlineData("@{ Qubes = @{} }", "Version = 1 is missing")]
    [InlineData("@{ Version = 1 }", "Qubes = @{ ... } is missing")]
    [InlineData("@{ Version = 1; Qubes = @{}; Extra = 1 }", "unknown key 'Extra' in the file")]
    [InlineData("@{ Version = 1; Qubes = @{ 'dom0' = @{} } }", "dom0 has no Qubes firewall")]
    [InlineData("@{ Version = 1; Qubes = @{ 'a b' = @{} } }", "is not a qube name")]
    [InlineData("@{ Version = 1; Qubes = @{ 'work' = @{}; 'WORK' = @{} } }", "the key 'WORK' is given twice")]
    [InlineData("@{ Version = 1; Qubes = @{} } @{}", "after the closing }")]
    [InlineData("@{ Version = 1; Qubes = @{}", "not closed with }")]
    [InlineData("", "the file is empty")]
    [InlineData("@('x')", "must hold one hashtable")]
    [InlineData("<# never closed", "not closed with #>")]
    public void A_malformed_file_is_refused(string text, string message)
    {
        var ex = Assert.Throws<QubesFirewallException>(() => ConfigurationReader.Read(text, ConfigurationFormat.Psd1));
        Assert.Contains(message, ex.Message);
    }

    [Fact]
    public void Deep_nesting_and_size_are_capped()
    {
        var deep = "@{ Version = 1; Qubes = " + string.Concat(Enumerable.Repeat("@(", 20)) + string.Concat(Enumerable.Repeat(")", 20)) + " }";
        Assert.Contains("nested deeper than 8 levels", Assert.Throws<QubesFirewallException>(() => ConfigurationReader.Read(deep, ConfigurationFormat.Psd1)).Message);
        var huge = "@{ Version = 1; Qubes = @{} }\n#" + new string('x', DataLimits.MaxBytes);
        Assert.Equal("ConfigurationTooLarge", Assert.Throws<QubesFirewallException>(() => ConfigurationReader.Read(huge, ConfigurationFormat.Psd1)).ErrorId);
        Assert.Equal("ConfigurationTooLarge", Assert.Throws<QubesFirewallException>(() => ConfigurationReader.Read("{\"Version\":1,\"Qubes\":{}," + new string(' ', DataLimits.MaxBytes) + "}", ConfigurationFormat.Json)).ErrorId);
        var longString = "@{ Version = 1; Qubes = @{ 'work' = @{ NetVM = '" + new string('a', 5000) + "' } } }";
        Assert.Contains("longer than 4096", Assert.Throws<QubesFirewallException>(() => ConfigurationReader.Read(longString, ConfigurationFormat.Psd1)).Message);
    }

    [Theory]
    [InlineData("{\"Version\": 1, \"Qubes\": {\"work\": {\"NetVM\": null}}}", 1, "null is not a value")]
    [InlineData("{\n\"Version\": 1,\n\"Qubes\": {\"work\": {\"NetVM\": \"a\", \"NetVM\": \"b\"}}}", 3, "the key 'NetVM' is given twice")]
    [InlineData("{\n\"Version\": 1.5,\n\"Qubes\": {}}", 2, "decimal integers")]
    [InlineData("{\"Version\": 1, \"Qubes\": {},}", 1, "not valid JSON")]
    [InlineData("{\n\"Version\": 1,\n\"Qubes\": {\n\"work\": {\n\"Rules\": [\"action=accept\"],\n\"Forwards\": [{\"Protocol\": \"tcp\", \"Port\": 1}]}}}", 6, "has no AllowFrom")]
    [InlineData("{\n\"Version\": 1,\n\"Qubes\": {\"work\": {\"NetVM\": \"sys-\\u00e9\"}}}", 3, "printable ASCII only")]
    [InlineData("[1]", 1, "one JSON object")]
    public void A_hostile_json_file_is_refused_with_its_line(string text, int line, string message)
    {
        var ex = Assert.Throws<QubesFirewallException>(() => ConfigurationReader.Read(text, ConfigurationFormat.Json));
        Assert.Equal("InvalidConfiguration", ex.ErrorId);
        Assert.StartsWith($"line {line}: ", ex.Message);
        Assert.Contains(message, ex.Message);
    }

    [Fact]
    public void Json_comments_are_skipped()
    {
        var config = ConfigurationReader.Read("// net\n{ \"Version\": 1, /* qubes */ \"Qubes\": { \"work\": { \"IPv6\": \"Disabled\" } } }", ConfigurationFormat.Json);
        Assert.Equal(IPv6Setting.Disabled, config.Find("work")!.IPv6);
    }
}
