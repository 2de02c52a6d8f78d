using System.Diagnostics;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Persistence;
using QubesFirewall.Engine.Planning;
using QubesFirewall.Engine.Scripts;

namespace QubesFirewall.Engine.Tests;

/// <summary>The generated nft and shell text: exact rules, shell syntax (bash -n, dash -n), the managed block.</summary>
public sealed class PortForwardScriptTests
{
    private static readonly QubesInventory Inventory = QubesXmlBuilder.Standard().Inventory();

    private static QubeForwards Layout(string qube, params PortForward[] forwards) =>
        ForwardLayout.Build(Inventory, forwards, new List<string>()).For(Inventory.Get(qube));

    private static readonly PortForward Web = PortForward.Create("work", ForwardProtocol.Tcp, 443, 8443, ForwardType.External,
        ["192.168.1.0/24", "10.0.0.0/8", "10.1.0.0/16"], null, 1900000000, "web");

    [Fact]
    public void The_edge_translates_traffic_from_its_outside_interfaces_addressed_to_itself()
    {
        var tx = NftForwardScript.Transaction(Layout("sys-net", Web));
        Assert.Contains("add rule ip qubes qubesfw-dnat iifname != \"vif*\" iifname != \"lo\" fib daddr type local ip saddr { 192.168.1.0/24, 10.0.0.0/8 } tcp dport 443 meta time < 1900000000 dnat to 10.137.0.3 comment \"tcp/443 to work\"\n", tx);
        Assert.Contains("add rule ip qubes qubesfw-forward iifname != \"vif*\" iifname != \"lo\" ip saddr { 192.168.1.0/24, 10.0.0.0/8 } ip daddr 10.137.0.3 tcp dport 443 ct status dnat meta time < 1900000000 accept comment \"tcp/443 to work\"\n", tx);
        Assert.Contains("insert rule ip qubes custom-forward jump qubesfw-forward comment \"qubesfirewall\"\n", tx);
        Assert.Contains("delete chain ip qubes qubesfw-input\n", tx);
        Assert.DoesNotContain("custom-input", tx);
    }

    [Fact]
    public void The_last_hop_translates_the_port_and_the_target_accepts_it()
    {
        var fw = NftForwardScript.Transaction(Layout("sys-firewall", Web));
        Assert.Contains("add rule ip qubes qubesfw-dnat iifgroup 1 ip daddr 10.137.0.3 ip saddr { 192.168.1.0/24, 10.0.0.0/8 } tcp dport 443 meta time < 1900000000 dnat to 10.137.0.11:8443 comment \"tcp/443 to work\"\n", fw);
        Assert.Contains("add rule ip qubes qubesfw-forward iifgroup 1 ip saddr { 192.168.1.0/24, 10.0.0.0/8 } ip daddr 10.137.0.11 tcp dport 8443 ct status dnat meta time < 1900000000 accept", fw);

        var target = NftForwardScript.Transaction(Layout("work", Web));
        Assert.Contains("add rule ip qubes qubesfw-input iifgroup 1 ip saddr { 192.168.1.0/24, 10.0.0.0/8 } ip daddr 10.137.0.11 tcp dport 8443 meta time < 1900000000 accept comment \"tcp/443 to work\"\n", target);
        Assert.Contains("insert rule ip qubes custom-input jump qubesfw-input comment \"qubesfirewall\"\n", target);
        Assert.Contains("delete chain ip qubes qubesfw-dnat\ndelete chain ip qubes qubesfw-forward\n", target);
    }

    [Fact]
    public void Internal_forwards_match_the_clients_and_the_network_qubes_own_address_or_a_named_interface()
    {
        var f = PortForward.Create("work", ForwardProtocol.Udp, 53, 5353, ForwardType.Internal, ["10.137.0.10"]);
        var tx = NftForwardScript.Transaction(Layout("sys-firewall", f));
        Assert.Contains("add rule ip qubes qubesfw-dnat iifgroup 2 ip daddr 10.137.0.3 ip saddr 10.137.0.10 udp dport 53 dnat to 10.137.0.11:5353 comment \"udp/53 to work\"\n", tx);
        Assert.Contains("add rule ip qubes qubesfw-forward iifgroup 2 ip saddr 10.137.0.10 ip daddr 10.137.0.11 udp dport 5353 ct status dnat accept comment \"udp/53 to work\"\n", tx);

        var tun = PortForward.Create("vpn-app", ForwardProtocol.Tcp, 9000, type: ForwardType.Internal, @interface: "tun0");
        var vpn = NftForwardScript.Transaction(Layout("sys-vpn", tun));
        Assert.Contains("add rule ip qubes qubesfw-dnat iifname \"tun0\" fib daddr type local tcp dport 9000 dnat to 10.137.0.8 comment \"tcp/9000 to vpn-app\"\n", vpn);
    }

    [Fact]
    public void Rules_come_in_port_order_whatever_the_declaration_order()
    {
        var a = PortForward.Create("work", ForwardProtocol.Tcp, 8080);
        var b = PortForward.Create("personal", ForwardProtocol.Tcp, 22);
        var c = PortForward.Create("personal", ForwardProtocol.Udp, 22);
        Assert.Equal(NftForwardScript.Render(Layout("sys-net", a, b, c)), NftForwardScript.Render(Layout("sys-net", c, a, b)));
        var lines = NftForwardScript.Transaction(Layout("sys-net", a, b, c)).Split('\n').Where(l => l.StartsWith("add rule ip qubes qubesfw-dnat", StringComparison.Ordinal)).ToList();
        Assert.Equal(["tcp dport 22", "udp dport 22", "tcp dport 8080"], lines.Select(l => string.Join(' ', l.Split(' ').SkipWhile(w => w is not ("tcp" or "udp")).Take(3))));
    }

    [Fact]
    public void With_nothing_left_the_script_removes_the_chains_and_jumps()
    {
        var empty = Layout("sys-net");
        Assert.True(empty.IsEmpty);
        var tx = NftForwardScript.Transaction(empty);
        Assert.DoesNotContain("add rule", tx);
        Assert.DoesNotContain("insert rule", tx);
        foreach (var chain in new[] { "qubesfw-dnat", "qubesfw-forward", "qubesfw-input" })
            Assert.Contains($"flush chain ip qubes {chain}\n", tx);
        Assert.EndsWith("delete chain ip qubes qubesfw-dnat\ndelete chain ip qubes qubesfw-forward\ndelete chain ip qubes qubesfw-input\n", tx);
        Assert.Contains("(none left: this removes the chains and jumps the module added)", NftForwardScript.Render(empty));
    }

    [Fact]
    public void The_script_reads_the_handles_once_and_pipes_one_transaction()
    {
        var script = NftForwardScript.Render(Layout("sys-net", Web));
        Assert.Equal(1, Count(script, "nft -a list table ip qubes"));
        Assert.Equal(1, Count(script, "| nft -f -"));
        Assert.Equal(2, Count(script, "QUBESFW_NFT"));
        Assert.Contains("/ comment \"qubesfirewall\" # handle [0-9]+$/ { print \"delete rule \" t \" \" c \" handle \" $NF }", script);
        Assert.StartsWith("# QubesFirewall port forwards in sys-net (10.137.0.2)", script);
        Assert.Contains("#   hop 1 of 2: tcp/443 -> work:8443, external, from 192.168.1.0/24 10.0.0.0/8 10.1.0.0/16, until 2030-03-17 17:46:40Z (web) (sys-net -> sys-firewall -> work)\n", script);
    }

    private static int Count(string text, string what) => text.Split(what).Length - 1;

    public static TheoryData<string> Shells => new() { "bash", "dash" };

    [Theory]
    [MemberData(nameof(Shells))]
    public void Every_generated_script_parses(string shell)
    {
        var forwards = new[]
        {
            Web,
            PortForward.Create("personal", ForwardProtocol.Udp, 51820, comment: "wireguard: home [1]"),
            PortForward.Create("work", ForwardProtocol.Tcp, 8080, type: ForwardType.Internal, allowFrom: ["10.137.0.10"]),
            PortForward.Create("vpn-app", ForwardProtocol.Tcp, 9000, type: ForwardType.Internal, @interface: "tun0"),
            PortForward.Create("vpn-app", ForwardProtocol.Tcp, 22, 2222, allowFrom: ["203.0.113.0/24"], @interface: "ens6"),
        };
        var layout = ForwardLayout.Build(Inventory, forwards, new List<string>());
        var scripts = Inventory.Qubes.Select(q => NftForwardScript.Render(layout.For(q))).ToList();
        scripts.Add(HookFiles.BlockBody(Inventory, Inventory.Get("sys-net"), HookFiles.FirewallUserScript, layout.For));
        scripts.Add(ManagedBlock.Upsert("#!/bin/sh\necho hi\nexit 0\n", scripts[0]));
        foreach (var script in scripts) AssertParses(shell, script);
    }

    [Theory]
    [MemberData(nameof(Shells))]
    public void A_block_shared_by_disposables_guards_each_part_and_parses(string shell)
    {
        var inv = new QubesXmlBuilder()
            .Qube("sys-net", 2, null, providesNetwork: true)
            .Qube("dvm", 3, null, template: null)
            .Qube("sys-firewall", 4, "sys-net", providesNetwork: true, cls: "DispVM", template: "dvm", dispid: 10)
            .Qube("sys-firewall-2", 5, "sys-net", providesNetwork: true, cls: "DispVM", template: "dvm", dispid: 11)
            .Qube("a", 6, "sys-firewall")
            .Qube("b", 7, "sys-firewall-2")
            .Inventory();
        var layout = ForwardLayout.Build(inv, [PortForward.Create("a", ForwardProtocol.Tcp, 80), PortForward.Create("b", ForwardProtocol.Tcp, 81)], new List<string>());
        var body = HookFiles.BlockBody(inv, inv.Get("dvm"), HookFiles.FirewallUserScript, layout.For);
        Assert.Contains("if [ \"$(qubesdb-read /name 2>/dev/null)\" = 'sys-firewall' ]; then\n", body);
        Assert.Contains("if [ \"$(qubesdb-read /name 2>/dev/null)\" = 'sys-firewall-2' ]; then\n", body);
        Assert.Contains("Kept in dvm, the disposable template of sys-firewall, sys-firewall-2", body);
        AssertParses(shell, body);
    }

    /// <summary>Asserts that <paramref name="shell"/> -n accepts the script (<paramref name="what"/> names it in the failure).</summary>
    internal static void AssertParses(string shell, string script, string what = "")
    {
        var file = Path.Combine(Path.GetTempPath(), "qfw-sh-" + Guid.NewGuid().ToString("N")[..8] + ".sh");
        File.WriteAllText(file, script);
        try
        {
            var psi = new ProcessStartInfo(shell) { RedirectStandardError = true, RedirectStandardOutput = true };
            psi.ArgumentList.Add("-n");
            psi.ArgumentList.Add(file);
            using var p = Process.Start(psi)!;
            var err = p.StandardError.ReadToEnd();
            p.WaitForExit();
            Assert.True(p.ExitCode == 0, $"{shell} -n failed{what}: {err}\n{script}");
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Fact]
    public void Values_reaching_a_script_are_quoted_or_validated()
    {
        Assert.Equal("'sys-net'", ShellQuote.Single("sys-net"));
        Assert.Equal("'it'\\''s'", ShellQuote.Single("it's"));
        Assert.Equal("InvalidScriptValue", Assert.Throws<QubesFirewallException>(() => ShellQuote.Single("a\nb")).ErrorId);
        Assert.Equal("InvalidScriptValue", Assert.Throws<QubesFirewallException>(() => ShellQuote.CommentText("a\nrm -rf /")).ErrorId);
        // an interface name is re-checked at the point it is written, whatever built the hop
        var hop = new ChainHop(Inventory.Get("sys-net"), 0, HopIngressKind.NamedInterface, "x\" accept #", null, "10.137.0.3", false);
        var chain = new NetworkChain(PortForward.Create("work", ForwardProtocol.Tcp, 80), Inventory.Get("work"), [hop]);
        Assert.Equal("InvalidInterface", Assert.Throws<QubesFirewallException>(() => NftForwardScript.DnatRules(chain, hop, NftFamily.Ip).ToList()).ErrorId);
    }

    [Fact]
    public void Forwards_allowing_only_ipv6_sources_generate_no_ipv4_rule_at_all()
    {
        // a declaration may carry IPv6 networks (the grammar is family-aware); it must never become "any source" in IPv4
        var v6only = PortForwardFeature.Parse("work", "qubesfirewall.forward.tcp.80", "target=80 type=external allow=2001:db8::/32");
        var tx = NftForwardScript.Transaction(Layout("sys-net", v6only));
        Assert.DoesNotContain("add rule", tx);
        Assert.DoesNotContain("jump", tx);
    }
}

/// <summary>The managed block on its own: insert, replace, remove, the user's lines untouched.</summary>
public sealed class ManagedBlockTests
{
    private const string Body = "echo one\necho two\n";

    [Fact]
    public void A_missing_file_gets_an_interpreter_line_and_the_block()
    {
        Assert.Equal($"#!/bin/sh\n{ManagedBlock.BeginMarker}\necho one\necho two\n{ManagedBlock.EndMarker}\n", ManagedBlock.Upsert(null, Body));
        Assert.Null(ManagedBlock.Remove(null));
        Assert.Null(ManagedBlock.Extract(null));
    }

    [Fact]
    public void The_block_is_appended_once_then_replaced_in_place()
    {
        const string user = "#!/bin/sh\n# mine\nip route add 10.9.0.0/16 dev eth0\n";
        var once = ManagedBlock.Upsert(user, Body);
        Assert.Equal(user + ManagedBlock.Render(Body), once);
        Assert.Equal(once, ManagedBlock.Upsert(once, Body));
        var withMore = once + "echo after\n";
        var replaced = ManagedBlock.Upsert(withMore, "echo three\n");
        Assert.Equal(user + ManagedBlock.Render("echo three\n") + "echo after\n", replaced);
        Assert.Equal("echo three\n", ManagedBlock.Extract(replaced));
        Assert.Equal(user + "echo after\n", ManagedBlock.Remove(replaced));
    }

    [Theory]
    [InlineData("#!/bin/sh\necho a\nexit 0\n", "#!/bin/sh\necho a\n", "exit 0\n")]
    [InlineData("#!/bin/sh\necho a\nexit\n\n# end\n", "#!/bin/sh\necho a\n", "exit\n\n# end\n")]
    [InlineData("#!/bin/sh\nif true; then exit 0; fi\n", "#!/bin/sh\nif true; then exit 0; fi\n", "")]
    [InlineData("#!/bin/sh\necho no newline", "#!/bin/sh\necho no newline\n", "")]
    [InlineData("", "", "")]
    public void The_block_goes_before_a_final_exit(string content, string before, string after)
    {
        var result = ManagedBlock.Upsert(content, Body);
        Assert.Equal(before + ManagedBlock.Render(Body) + after, result);
    }

    [Fact]
    public void Removing_gives_back_the_file_exactly_when_it_ended_with_a_newline()
    {
        foreach (var content in new[] { "#!/bin/sh\n", "#!/bin/bash\nset -e\necho x\n", "#!/bin/sh\nexit 0\n", "#!/bin/sh\r\necho windows\r\n" })
            Assert.Equal(content, ManagedBlock.Remove(ManagedBlock.Upsert(content, Body)));
        Assert.Equal("no block\n", ManagedBlock.Remove("no block\n"));
    }

    [Theory]
    [InlineData(ManagedBlock.BeginMarker + "\necho\n")]
    [InlineData("echo\n" + ManagedBlock.EndMarker + "\n")]
    [InlineData(ManagedBlock.EndMarker + "\n" + ManagedBlock.BeginMarker + "\n")]
    [InlineData(ManagedBlock.BeginMarker + "\n" + ManagedBlock.EndMarker + "\n" + ManagedBlock.BeginMarker + "\n" + ManagedBlock.EndMarker + "\n")]
    public void A_damaged_block_is_refused_not_guessed(string content)
    {
        Assert.Equal("ManagedBlockDamaged", Assert.Throws<QubesFirewallException>(() => ManagedBlock.Upsert(content, Body)).ErrorId);
        Assert.Equal("ManagedBlockDamaged", Assert.Throws<QubesFirewallException>(() => ManagedBlock.Remove(content)).ErrorId);
    }

    [Fact]
    public void A_body_cannot_smuggle_marker_lines()
    {
        Assert.Equal("ManagedBlockDamaged", Assert.Throws<QubesFirewallException>(() => ManagedBlock.Upsert(null, ManagedBlock.EndMarker + "\n")).ErrorId);
    }
}
