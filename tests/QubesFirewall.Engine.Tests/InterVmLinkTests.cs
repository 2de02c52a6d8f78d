using QubesFirewall.Engine.Deployment;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Persistence;
using QubesFirewall.Engine.Planning;
using QubesFirewall.Engine.Scripts;

namespace QubesFirewall.Engine.Tests;

/// <summary>Link feature names and ports, the link planner's steps, exact Disable, the shared block with port forwards, IPv6, the audit check.</summary>
public sealed class InterVmLinkFeatureTests
{
    [Theory]
    [InlineData("db", ForwardProtocol.Tcp, 5432, 5432, "qubesfirewall.link.db.tcp.5432")]
    [InlineData("my.db.v2", ForwardProtocol.Udp, 8000, 8100, "qubesfirewall.link.my.db.v2.udp.8000-8100")]
    [InlineData("a.tcp.80", ForwardProtocol.Udp, 0, 0, "qubesfirewall.link.a.tcp.80.udp.all")]
    public void Names_are_formatted_and_parsed_from_the_right(string to, ForwardProtocol protocol, int first, int last, string name)
    {
        var ports = new LinkPorts(first, last);
        Assert.Equal(name, InterVmLinkFeature.NameFor(to, protocol, ports));
        Assert.True(InterVmLinkFeature.TryParseName(name, out var parsedTo, out var parsedProtocol, out var parsedPorts));
        Assert.Equal((to, protocol, ports), (parsedTo, parsedProtocol, parsedPorts));
    }

    [Theory]
    [InlineData("qubesfirewall.link.db.tcp.05432")] // not canonical
    [InlineData("qubesfirewall.link.db.tcp.0")]
    [InlineData("qubesfirewall.link.db.tcp.65536")]
    [InlineData("qubesfirewall.link.db.tcp.100-50")]
    [InlineData("qubesfirewall.link.db.tcp.80-80-90")]
    [InlineData("qubesfirewall.link.db.icmp.1")]
    [InlineData("qubesfirewall.link.db.TCP.1")]
    [InlineData("qubesfirewall.link.tcp.5432")] // no qube
    [InlineData("qubesfirewall.link..tcp.5432")]
    [InlineData("qubesfirewall.link.1db.tcp.5432")] // not a qube name
    [InlineData("qubesfirewall.link.db.tcp.")]
    [InlineData("qubesfirewall.link.db.tcp.ALL")]
    [InlineData("qubesfirewall.forward.tcp.5432")]
    public void Other_names_are_not_links(string name) =>
        Assert.False(InterVmLinkFeature.TryParseName(name, out _, out _, out _));

    [Fact]
    public void A_range_of_one_port_is_that_port()
    {
        Assert.Equal("80", LinkPorts.Parse("80-80").ToString());
        Assert.Equal("qubesfirewall.link.db.tcp.80", InterVmLink.Create("work", "db", ForwardProtocol.Tcp, LinkPorts.FromArgument("80-80")).FeatureName);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(65536)]
    [InlineData(-1)]
    [InlineData("x")]
    [InlineData("80-")]
    [InlineData("90-80")]
    [InlineData("1;reboot")]
    [InlineData("")]
    [InlineData(null)]
    public void Bad_ports_are_refused(object? value)
    {
        var ex = Assert.Throws<QubesFirewallException>(() => LinkPorts.FromArgument(value));
        Assert.Equal("InvalidLinkPort", ex.ErrorId);
    }

    [Fact]
    public void Port_arguments_accept_numbers_ranges_and_all()
    {
        Assert.Equal(new LinkPorts(5432, 5432), LinkPorts.FromArgument(5432));
        Assert.Equal(new LinkPorts(8000, 8100), LinkPorts.FromArgument("8000-8100"));
        Assert.True(LinkPorts.FromArgument("all").IsAll);
        Assert.Null(LinkPorts.All.DstPorts);
        Assert.Equal("8000-8100", new LinkPorts(8000, 8100).DstPorts);
    }

    [Fact]
    public void Any_and_bidirectional_expand_to_one_link_per_direction_protocol_and_port()
    {
        var links = InterVmLink.Expand("work", "db", InterVmProtocol.Any, [new LinkPorts(5432, 5432), new LinkPorts(6000, 6010)], bidirectional: true);
        Assert.Equal(
            [
                "work qubesfirewall.link.db.tcp.5432", "work qubesfirewall.link.db.tcp.6000-6010",
                "work qubesfirewall.link.db.udp.5432", "work qubesfirewall.link.db.udp.6000-6010",
                "db qubesfirewall.link.work.tcp.5432", "db qubesfirewall.link.work.tcp.6000-6010",
                "db qubesfirewall.link.work.udp.5432", "db qubesfirewall.link.work.udp.6000-6010",
            ],
            links.Select(l => l.From + " " + l.FeatureName));
        Assert.Equal(["work qubesfirewall.link.db.tcp.all"], InterVmLink.Expand("work", "db", InterVmProtocol.Tcp, [], false).Select(l => l.From + " " + l.FeatureName));
    }

    [Theory]
    [InlineData("work", "work", "LinkToItself")]
    [InlineData("work", "-db", "InvalidQubeName")]
    [InlineData("wo rk", "db", "InvalidQubeName")]
    public void Bad_qube_names_are_refused(string from, string to, string errorId) =>
        Assert.Equal(errorId, Assert.Throws<QubesFirewallException>(() => InterVmLink.Create(from, to, ForwardProtocol.Tcp, LinkPorts.All)).ErrorId);

    [Fact]
    public void Declarations_with_bad_values_or_names_come_back_with_their_problem()
    {
        var qube = new Qube
        {
            Name = "work",
            Features = new Dictionary<string, string>
            {
                ["qubesfirewall.link.db.tcp.5432"] = "1800000000",
                ["qubesfirewall.link.db.tcp.22"] = "yes; rm -rf /",
                ["qubesfirewall.link.db.sctp.1"] = "1",
                ["qubesfirewall.link.work.tcp.1"] = "1",
            },
        };
        var read = InterVmLinkDeclaration.Read(qube);
        Assert.Equal(4, read.Count);
        Assert.Equal(["qubesfirewall.link.db.tcp.5432"], read.Where(d => d.Link is not null).Select(d => d.FeatureName));
        Assert.All(read.Where(d => d.Link is null), d => Assert.NotNull(d.Problem));
        Assert.Equal(DateTimeOffset.FromUnixTimeSeconds(1800000000), InterVmLinkFeature.EnabledAt("1800000000"));
    }
}

[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class InterVmLinkPlannerTests : IDisposable
{
    private const string Rc = "/rw/config/rc.local";
    private const string UserScript = "/rw/config/qubes-firewall-user-script";
    private readonly TempRoot _root;

    public InterVmLinkPlannerTests() : this(QubesXmlBuilder.Standard()) { }

    private InterVmLinkPlannerTests(QubesXmlBuilder xml) => _root = new TempRoot(xml.Build());

    public void Dispose() => _root.Dispose();

    private DeploymentOptions Options => DeploymentOptions.For(_root.Backend, _root.Now);

    private static InterVmLink Link(string from, string to, int port, ForwardProtocol p = ForwardProtocol.Tcp) =>
        InterVmLink.Create(from, to, p, new LinkPorts(port, port));

    private InterVmLinkPlan Enable(params InterVmLink[] links)
    {
        var plan = InterVmLinkPlanner.PlanEnable(_root.Backend, links, Options);
        Assert.Null(InterVmLinkPlanner.Apply(_root.Backend, plan).Failure);
        return plan;
    }

    private InterVmLinkPlan Disable(params InterVmLink[] links)
    {
        var plan = InterVmLinkPlanner.PlanDisable(_root.Backend, links, Options);
        Assert.Null(InterVmLinkPlanner.Apply(_root.Backend, plan).Failure);
        return plan;
    }

    /// <summary>The agent keys a qube carries (<c>vm-config.qubesfw.*</c>), gen included.</summary>
    private Dictionary<string, string> Keys(string qube) => KeysOf(_root, qube);

    private static Dictionary<string, string> KeysOf(TempRoot root, string qube) =>
        root.Backend.GetInventory().Get(qube).Features.Where(f => Agent.AgentFeatures.IsAgentFeature(f.Key)).ToDictionary(f => f.Key, f => f.Value);

    /// <summary>The values of a qube's link keys of one kind (<c>lnet4</c>, <c>ldst6</c>...).</summary>
    private static List<string> LinkKeys(TempRoot root, string qube, string kind) =>
        KeysOf(root, qube).Where(k => k.Key.StartsWith(Agent.AgentFeatures.Prefix + kind + ".", StringComparison.Ordinal)).Select(k => k.Value).ToList();

    private void AssertKeysMatchDeclarations()
    {
        var inventory = _root.Backend.GetInventory();
        Assert.Empty(Agent.AgentFeatures.Changes(inventory, Agent.AgentFeatures.DeriveAll(inventory)));
    }

    private IReadOnlyList<string> Rules(string vm) => _root.Backend.GetFirewall(vm).Rules.Select(r => r.Text).ToList();

    private void SetRules(string vm, params string[] texts)
    {
        var current = _root.Backend.GetFirewall(vm).VisibleAt(_root.Now);
        var edit = new FirewallEdit(
            texts.Select((t, i) => new RuleInsertion(RuleText.Parse(t, _root.Now), i)).ToList(),
            current.Select((r, i) => new RuleRemoval(i, r.Text)).ToList());
        _root.Backend.ApplyFirewallEdit(vm, edit, _root.Backend.GetFirewall(vm));
        Assert.Equal(texts, Rules(vm));
    }

    [Fact]
    public void Enable_declares_then_sets_the_keys_of_the_destination_and_the_network_qube_and_last_the_sources_firewall()
    {
        SetRules("work", "action=accept specialtarget=dns", "action=drop");
        var plan = InterVmLinkPlanner.PlanEnable(_root.Backend, [Link("work", "personal", 5432)], Options);
        Assert.Equal(PlanOperation.Enable, plan.Operation);
        Assert.Equal("sys-firewall", plan.NetVM);
        Assert.Equal("work -> personal tcp/5432 (through sys-firewall)", plan.Target);
        Assert.True(plan.ViaAgent);
        Assert.Equal(
            [
                (DeploymentStepKind.SetFeature, "work"),
                (DeploymentStepKind.SetFeature, "sys-firewall"), (DeploymentStepKind.SetFeature, "sys-firewall"),
                (DeploymentStepKind.SetFeature, "personal"), (DeploymentStepKind.SetFeature, "personal"),
                (DeploymentStepKind.EditFirewall, "work"),
            ],
            plan.Steps.Select(s => (s.Kind, s.VMName)));
        Assert.Equal(["vm-config.qubesfw.lnet4.", "vm-config.qubesfw.gen", "vm-config.qubesfw.ldst4.", "vm-config.qubesfw.gen"],
            plan.Steps.Skip(1).Take(4).Select(s => s.FeatureName!.Length > 24 ? s.FeatureName[..24] : s.FeatureName));
        var text = plan.Describe();
        Assert.StartsWith("Enable inter-qube link work -> personal tcp/5432 (through sys-firewall):", text);
        Assert.Contains("proto=tcp ports=5432 src=10.137.0.11 dst=10.137.0.10 from=work vm=personal", text);
        Assert.Contains("work: add to its Qubes firewall: action=accept dst4=10.137.0.10/32 proto=tcp dstports=5432-5432 comment=qubesfirewall link to personal (add firewall rule as number 1)", text);
        Assert.DoesNotContain("/rw/config", text);
        Assert.Empty(plan.Warnings);

        Assert.Null(InterVmLinkPlanner.Apply(_root.Backend, plan).Failure);
        Assert.Equal(["action=accept specialtarget=dns", "action=accept dst4=10.137.0.10/32 proto=tcp dstports=5432-5432 comment=qubesfirewall link to personal", "action=drop"], Rules("work"));
        Assert.Equal(_root.Now.ToUnixTimeSeconds().ToString(System.Globalization.CultureInfo.InvariantCulture),
            _root.Backend.GetInventory().Get("work").Features["qubesfirewall.link.personal.tcp.5432"]);
        Assert.EndsWith(" proto=tcp ports=5432 src=10.137.0.11 dst=10.137.0.10 from=work vm=personal", Assert.Single(LinkKeys(_root, "personal", "ldst4")));
        Assert.StartsWith("for=personal gen=", Assert.Single(LinkKeys(_root, "personal", "ldst4")));
        Assert.Single(LinkKeys(_root, "sys-firewall", "lnet4"));
        Assert.Empty(LinkKeys(_root, "personal", "ldst6"));
        Assert.Null(_root.Backend.ReadQubeFile("personal", Rc)); // nothing is written into a qube
        AssertKeysMatchDeclarations();

        var listed = Assert.Single(InterVmLinkPlanner.List(_root.Backend.GetInventory(), _root.Backend.GetFirewall, _root.Now));
        Assert.Equal(("work", "personal", InterVmProtocol.Tcp, "5432", "sys-firewall"), (listed.From, listed.To, listed.Protocol, listed.Port, listed.NetVM));
        Assert.True(listed.IsComplete);
    }

    [Fact]
    public void Qubes_of_the_link_without_the_agent_are_refused_by_name_and_nothing_changes()
    {
        _root.Backend.RemoveFeature("personal", Agent.AgentScript.VersionFeature);
        var rules = Rules("work");
        var ex = Assert.Throws<QubesFirewallException>(() => InterVmLinkPlanner.PlanEnable(_root.Backend, [Link("work", "personal", 5432)], DeploymentOptions.For(_root.Backend, _root.Now)));
        Assert.Equal("QubeFirewallAgentMissing", ex.ErrorId);
        Assert.Contains("personal has none", ex.Message);
        Assert.Contains("Install-QubeFirewallAgent -VMName personal", ex.Message);
        Assert.EndsWith("Nothing was changed.", ex.Message);
        Assert.Empty(InterVmLinkPlanner.DeclaredLinks(_root.Backend.GetInventory()));
        Assert.Empty(Keys("sys-firewall"));
        Assert.Equal(rules, Rules("work"));
    }

    [Fact]
    public void Running_it_again_changes_nothing()
    {
        Enable(Link("work", "personal", 5432));
        var before = (string.Join("\n", Keys("personal")), string.Join("\n", Keys("sys-firewall")), string.Join("\n", Rules("work")));
        var again = InterVmLinkPlanner.PlanEnable(_root.Backend, [Link("work", "personal", 5432)], Options);
        Assert.Equal(PlanOperation.Reapply, again.Operation);
        Assert.Empty(again.Steps);
        Assert.Null(InterVmLinkPlanner.Apply(_root.Backend, again).Failure);
        Assert.Equal(before, (string.Join("\n", Keys("personal")), string.Join("\n", Keys("sys-firewall")), string.Join("\n", Rules("work"))));
    }

    [Fact]
    public void Qubes_with_different_network_qubes_are_refused_naming_each_netvm()
    {
        var ex = Assert.Throws<QubesFirewallException>(() => InterVmLinkPlanner.PlanEnable(_root.Backend, [Link("work", "vpn-app", 22)], Options));
        Assert.Equal("DifferentNetVM", ex.ErrorId);
        Assert.Contains("'work' uses the network qube 'sys-firewall' and 'vpn-app' uses 'sys-vpn'", ex.Message);
        // sys-vpn sits behind sys-firewall, where VPN qubes sit: vpn-app is not told to leave it
        Assert.DoesNotContain("qvm-prefs vpn-app", ex.Message);
        Assert.Contains("Moving 'vpn-app' off 'sys-vpn' is not the way: that would take it off its tunnel", ex.Message);
        Assert.Contains("Add-QubeTcpBinding -From work -To vpn-app -Port 22.", ex.Message);
        var none = Assert.Throws<QubesFirewallException>(() => InterVmLinkPlanner.PlanEnable(_root.Backend, [Link("work", "vault", 22)], Options));
        Assert.Equal("NoNetVM", none.ErrorId);
        Assert.Contains("'vault'", none.Message);
        Assert.Equal("QubeNotFound", Assert.Throws<QubesFirewallException>(() => InterVmLinkPlanner.PlanEnable(_root.Backend, [Link("work", "nosuch", 22)], Options)).ErrorId);
    }

    [Fact]
    public void Disable_removes_exactly_what_enable_added_and_keeps_the_users_lines_rules_and_other_links()
    {
        const string userRc = "#!/bin/sh\n# mine\necho hello > /tmp/hello\n";
        _root.Backend.WriteQubeFile("personal", Rc, userRc, ManagedBlock.FileMode);
        SetRules("work", "action=accept proto=tcp dstports=443-443", "action=drop");
        var beforeFeatures = _root.Backend.GetInventory().Get("work").Features;

        Enable(Link("work", "personal", 5432), Link("work", "personal", 6379));
        Enable(Link("untrusted", "personal", 80));
        Assert.Equal(4, Rules("work").Count);
        Assert.Equal(3, LinkKeys(_root, "personal", "ldst4").Count);
        Assert.Equal(3, LinkKeys(_root, "sys-firewall", "lnet4").Count);

        var plan = Disable(Link("work", "personal", 5432));
        // the source's firewall first, then the keys of the network qube and the destination, the declaration last
        Assert.Equal((DeploymentStepKind.EditFirewall, "work"), (plan.Steps[0].Kind, plan.Steps[0].VMName));
        Assert.Equal((DeploymentStepKind.RemoveFeature, "work", "qubesfirewall.link.personal.tcp.5432"), (plan.Steps[^1].Kind, plan.Steps[^1].VMName, plan.Steps[^1].FeatureName));
        var keySteps = plan.Steps.Skip(1).SkipLast(1).ToList();
        Assert.Equal(["sys-firewall", "personal"], keySteps.Select(s => s.VMName).Distinct());
        Assert.All(keySteps, s => Assert.True(s.Kind is DeploymentStepKind.SetFeature or DeploymentStepKind.RemoveFeature, s.Description));
        Assert.Equal(2, keySteps.Count(s => s.Kind == DeploymentStepKind.RemoveFeature)); // the link's part in each, the others' rewritten with the new gen
        foreach (var qube in new[] { "sys-firewall", "personal" }) Assert.Equal(Agent.AgentFeatures.GenFeature, keySteps.Last(s => s.VMName == qube).FeatureName);
        Assert.Equal(["action=accept proto=tcp dstports=443-443", "action=accept dst4=10.137.0.10/32 proto=tcp dstports=6379-6379 comment=qubesfirewall link to personal", "action=drop"], Rules("work"));
        var personal = LinkKeys(_root, "personal", "ldst4");
        Assert.DoesNotContain(personal, v => v.Contains(" ports=5432 ", StringComparison.Ordinal));
        Assert.Contains(personal, v => v.Contains(" ports=6379 ", StringComparison.Ordinal));
        Assert.Contains(personal, v => v.Contains(" ports=80 ", StringComparison.Ordinal));
        Assert.Equal(["qubesfirewall.link.personal.tcp.6379"], _root.Backend.GetInventory().Get("work").Features.Keys.Where(InterVmLinkFeature.IsLinkFeature));
        AssertKeysMatchDeclarations();

        Disable(Link("work", "personal", 6379));
        Disable(Link("untrusted", "personal", 80));
        Assert.Equal(userRc, _root.Backend.ReadQubeFile("personal", Rc)); // never touched
        Assert.Empty(Keys("personal"));
        Assert.Empty(Keys("sys-firewall"));
        Assert.Equal(["action=accept proto=tcp dstports=443-443", "action=drop"], Rules("work"));
        Assert.Equal(beforeFeatures.OrderBy(f => f.Key), _root.Backend.GetInventory().Get("work").Features.OrderBy(f => f.Key));
        Assert.Equal(["action=accept"], Rules("untrusted")); // the default list, as it was (now written out)
    }

    [Fact]
    public void Disable_of_a_link_that_is_not_declared_is_refused_and_a_partly_declared_request_warns()
    {
        var ex = Assert.Throws<QubesFirewallException>(() => InterVmLinkPlanner.PlanDisable(_root.Backend, [Link("work", "personal", 5432)], Options));
        Assert.Equal("LinkNotFound", ex.ErrorId);
        Enable(Link("work", "personal", 5432));
        var plan = InterVmLinkPlanner.PlanDisable(_root.Backend, [Link("work", "personal", 5432), Link("work", "personal", 5432, ForwardProtocol.Udp)], Options);
        Assert.Equal(["work -> personal tcp/5432"], plan.Links.Select(l => l.Text));
        Assert.Contains(plan.Warnings, w => w.Contains("qubesfirewall.link.personal.udp.5432", StringComparison.Ordinal));
    }

    [Fact]
    public void Bidirectional_links_are_stored_on_each_source_and_open_both_ends()
    {
        var links = InterVmLink.Expand("work", "personal", InterVmProtocol.Udp, [new LinkPorts(5353, 5353)], bidirectional: true);
        var plan = Enable([.. links]);
        Assert.Equal([(DeploymentStepKind.SetFeature, "work"), (DeploymentStepKind.SetFeature, "personal")], plan.Steps.Take(2).Select(s => (s.Kind, s.VMName)));
        Assert.Equal([(DeploymentStepKind.EditFirewall, "work"), (DeploymentStepKind.EditFirewall, "personal")], plan.Steps.TakeLast(2).Select(s => (s.Kind, s.VMName)));
        // the keys between them: sys-firewall's two forward accepts and gen, then each end's input accept and gen
        Assert.Equal(["sys-firewall", "sys-firewall", "sys-firewall", "personal", "personal", "work", "work"], plan.Steps.Skip(2).SkipLast(2).Select(s => s.VMName));
        Assert.All(plan.Steps.Skip(2).SkipLast(2), s => Assert.Equal(DeploymentStepKind.SetFeature, s.Kind));
        Assert.Contains("action=accept dst4=10.137.0.11/32 proto=udp dstports=5353-5353 comment=qubesfirewall link to work", Rules("personal"));
        var sysFirewall = LinkKeys(_root, "sys-firewall", "lnet4");
        Assert.Contains(sysFirewall, v => v.Contains(" proto=udp ports=5353 src=10.137.0.11 dst=10.137.0.10 ", StringComparison.Ordinal));
        Assert.Contains(sysFirewall, v => v.Contains(" proto=udp ports=5353 src=10.137.0.10 dst=10.137.0.11 ", StringComparison.Ordinal));
        Assert.Single(LinkKeys(_root, "work", "ldst4"));
        Assert.Single(LinkKeys(_root, "personal", "ldst4"));
        Assert.Equal(2, InterVmLinkPlanner.List(_root.Backend.GetInventory(), _root.Backend.GetFirewall, _root.Now).Count(l => l.IsComplete));
    }

    [Fact]
    public void All_ports_match_the_protocol_only()
    {
        var plan = Enable(InterVmLink.Create("work", "personal", ForwardProtocol.Tcp, LinkPorts.All));
        Assert.Contains("proto=tcp ports=all src=10.137.0.11 dst=10.137.0.10 from=work vm=personal", plan.Describe());
        Assert.Contains(" proto=tcp ports=all src=10.137.0.11 dst=10.137.0.10 ", Assert.Single(LinkKeys(_root, "sys-firewall", "lnet4")));
        Assert.Contains("action=accept dst4=10.137.0.10/32 proto=tcp comment=qubesfirewall link to personal", Rules("work"));
    }

    [Fact]
    public void Port_forwards_and_links_share_the_network_qubes_keys_without_losing_each_other()
    {
        Enable(Link("work", "personal", 5432));
        var linkKey = Assert.Single(LinkKeys(_root, "sys-firewall", "lnet4"));
        var fwd = PortForwardPlanner.PlanAdd(_root.Backend, PortForward.Create("untrusted", ForwardProtocol.Tcp, 8080, type: ForwardType.Internal),
            DeploymentOptions.For(_root.Backend, _root.Now));
        Assert.Null(PortForwardPlanner.Apply(_root.Backend, fwd).Failure);
        Assert.Single(LinkKeys(_root, "sys-firewall", "hop4"));
        // the link's part is the same; only gen, which seals the whole set, moved on
        Assert.Equal(linkKey[linkKey.IndexOf(" proto=", StringComparison.Ordinal)..], Assert.Single(LinkKeys(_root, "sys-firewall", "lnet4"))[linkKey.IndexOf(" proto=", StringComparison.Ordinal)..]);
        AssertKeysMatchDeclarations();

        Assert.Null(PortForwardPlanner.Apply(_root.Backend, PortForwardPlanner.PlanRemove(_root.Backend, "untrusted", ForwardProtocol.Tcp, 8080, DeploymentOptions.For(_root.Backend, _root.Now))).Failure);
        Assert.Equal(linkKey, Assert.Single(LinkKeys(_root, "sys-firewall", "lnet4"))); // the same set as before the forward, the same gen
        Assert.Empty(LinkKeys(_root, "sys-firewall", "hop4"));
        Assert.True(InterVmLinkPlanner.List(_root.Backend.GetInventory(), _root.Backend.GetFirewall, _root.Now).Single().IsComplete);

        // and the link's removal keeps a forward's part
        Assert.Null(PortForwardPlanner.Apply(_root.Backend, PortForwardPlanner.PlanAdd(_root.Backend, PortForward.Create("untrusted", ForwardProtocol.Tcp, 8080, type: ForwardType.Internal),
            DeploymentOptions.For(_root.Backend, _root.Now))).Failure);
        Disable(Link("work", "personal", 5432));
        Assert.Single(LinkKeys(_root, "sys-firewall", "hop4"));
        Assert.Empty(LinkKeys(_root, "sys-firewall", "lnet4"));
        AssertKeysMatchDeclarations();
    }

    [Fact]
    public void Export_shows_the_links_rules_of_the_destination_and_the_network_qube()
    {
        Assert.Null(PortForwardPlanner.Export(_root.Backend.GetInventory(), "personal"));
        Enable(Link("work", "personal", 5432));
        var script = PortForwardPlanner.Export(_root.Backend.GetInventory(), "personal")!;
        Assert.Contains("add rule ip qubes qubesfw-link-input ip saddr 10.137.0.11 ip daddr 10.137.0.10 tcp dport 5432 accept comment \"link work to personal tcp/5432\"", script.Script);
        Assert.Equal(0, script.Forwards);
        Assert.Contains("add rule ip qubes qubesfw-link-forward iifgroup 2 ip saddr 10.137.0.11 ip daddr 10.137.0.10 tcp dport 5432 accept comment \"link work to personal tcp/5432\"",
            PortForwardPlanner.Export(_root.Backend.GetInventory(), "sys-firewall")!.Script);
        Assert.Null(PortForwardPlanner.Export(_root.Backend.GetInventory(), "work")); // the source's part is its own Qubes firewall
        Assert.Null(_root.Backend.ReadQubeFile("personal", Rc)); // shown, not written
    }

    [Fact]
    public void On_the_live_backend_halted_qubes_the_link_reaches_get_their_keys_and_apply_them_when_they_start()
    {
        var inventory = _root.Backend.GetInventory();
        var live = new DeploymentOptions { Now = _root.Now, RequireRunning = true };
        var halted = inventory.WithPowerStates(n => n is "sys-firewall" or "personal" ? PowerState.Halted : PowerState.Running);
        var plan = InterVmLinkPlanner.PlanEnable(halted, [Link("work", "personal", 5432)], live, _root.Backend.ReadQubeFile, _root.Backend.GetFirewall);
        // nothing has to run for its keys to be set (no -Start): the plan is whole
        Assert.True(plan.IsComplete);
        Assert.Empty(plan.NotRunning);
        Assert.Contains(plan.Steps, s => s.Kind == DeploymentStepKind.SetFeature && s.VMName == "personal");
        Assert.Contains(plan.Steps, s => s.Kind == DeploymentStepKind.SetFeature && s.VMName == "sys-firewall");
        Assert.Contains(plan.Steps, s => s.Kind == DeploymentStepKind.EditFirewall && s.VMName == "work");

        // deployed live: feature calls and the firewall edit only; the halted qubes are Pending, nothing is started or run in them
        using var backend = new Deployment.FaultyBackend(_root.Backend);
        var result = InterVmLinkPlanner.Apply(backend, plan);
        Assert.Null(result.Failure);
        Assert.Equal([("personal", PortForwardHopStatus.Pending), ("sys-firewall", PortForwardHopStatus.Pending)], result.Hops.Select(h => (h.VMName, h.Status)));
        Assert.All(backend.Calls, c => Assert.StartsWith("set-feature ", c, StringComparison.Ordinal));
        Assert.Single(InterVmLinkPlanner.DeclaredLinks(_root.Backend.GetInventory()));
    }

    [Fact]
    public void A_disposable_network_qube_needs_no_force_and_nothing_goes_into_its_template()
    {
        using var root = new TempRoot(); // the sample: sys-firewall is a disposable of default-dvm, with the agent
        var plan = InterVmLinkPlanner.PlanEnable(root.Backend, [Link("work", "personal", 5432)], DeploymentOptions.For(root.Backend, root.Now));
        Assert.True(plan.ViaAgent);
        Assert.DoesNotContain(plan.Steps, s => s.VMName == "default-dvm" || s.Path is not null);
        Assert.Null(InterVmLinkPlanner.Apply(root.Backend, plan).Failure);
        Assert.Single(LinkKeys(root, "sys-firewall", "lnet4"));
        Assert.Empty(KeysOf(root, "default-dvm"));
        Assert.Null(root.Backend.ReadQubeFile("default-dvm", UserScript));
    }

    [Fact]
    public void The_audit_warns_when_a_qube_carrying_a_part_of_a_link_is_under_custom_persist_but_not_for_a_disposable()
    {
        using var root = new TempRoot(); // the sample: sys-firewall is a disposable of default-dvm; its keys are its own
        Assert.Null(InterVmLinkPlanner.Apply(root.Backend, InterVmLinkPlanner.PlanEnable(root.Backend, [Link("work", "personal", 5432)], DeploymentOptions.For(root.Backend, root.Now))).Failure);
        AuditContext Context() => new(root.Backend.GetInventory(), root.Backend.GetFirewall, root.Now, root.Backend.ReadQubeFile);
        Assert.DoesNotContain(FirewallAudit.Run(Context(), [root.Backend.GetInventory().Get("work")]), f => f.Check == InterVmLinkAuditCheck.LinkNotPersistent);

        root.Backend.SetFeature("personal", "service.custom-persist", "1");
        var persist = Assert.Single(FirewallAudit.Run(Context(), [root.Backend.GetInventory().Get("work")]), f => f.Check == InterVmLinkAuditCheck.LinkNotPersistent);
        Assert.Equal(AuditSeverity.Warning, persist.Severity);
        Assert.Contains("'personal'", persist.Message);
        Assert.Contains("custom-persist", persist.Message);
        Assert.Contains("its QubesFirewall agent does not start", persist.Message);
        Assert.DoesNotContain(FirewallAudit.Run(Context(), [root.Backend.GetInventory().Get("work")]), f => f.Check == InterVmLinkAuditCheck.LinkIncomplete);
    }

    [Fact]
    public void The_forward_checks_do_not_take_a_links_section_for_forward_parts()
    {
        using var root = new TempRoot(); // sys-firewall is a disposable: its keys hold a link part and a forward part
        Assert.Null(InterVmLinkPlanner.Apply(root.Backend, InterVmLinkPlanner.PlanEnable(root.Backend, [Link("work", "personal", 5432)], DeploymentOptions.For(root.Backend, root.Now))).Failure);
        AuditContext Context() => new(root.Backend.GetInventory(), root.Backend.GetFirewall, root.Now, root.Backend.ReadQubeFile);
        var qubes = new[] { "work", "personal", "untrusted" }.Select(n => root.Backend.GetInventory().Get(n)).ToList();
        Assert.DoesNotContain(FirewallAudit.Run(Context(), qubes), f => f.Check is Agent.AgentAuditCheck.AgentKeysStale or ForwardAuditChecks.UndeclaredPart);

        Assert.Null(PortForwardPlanner.Apply(root.Backend, PortForwardPlanner.PlanAdd(root.Backend, PortForward.Create("untrusted", ForwardProtocol.Tcp, 8080, type: ForwardType.Internal, allowFrom: ["10.137.0.11/32"]),
            DeploymentOptions.For(root.Backend, root.Now))).Failure);
        qubes = new[] { "work", "personal", "untrusted" }.Select(n => root.Backend.GetInventory().Get(n)).ToList(); // as they are now
        var findings = FirewallAudit.Run(Context(), qubes);
        Assert.DoesNotContain(findings, f => f.Check is Agent.AgentAuditCheck.AgentKeysStale or ForwardAuditChecks.UndeclaredPart or InterVmLinkAuditCheck.LinkIncomplete);
    }

    [Fact]
    public void Enabling_and_disabling_a_link_keeps_the_forward_part_a_shared_qube_carries()
    {
        using var root = new TempRoot();
        var options = DeploymentOptions.For(root.Backend, root.Now);
        Assert.Null(PortForwardPlanner.Apply(root.Backend, PortForwardPlanner.PlanAdd(root.Backend, PortForward.Create("untrusted", ForwardProtocol.Tcp, 8080, type: ForwardType.Internal, allowFrom: ["10.137.0.11/32"]), options)).Failure);
        string Part(string qube, string kind) => Assert.Single(root.Backend.GetInventory().Get(qube).Features, f => f.Key.StartsWith("vm-config.qubesfw." + kind, StringComparison.Ordinal)).Value;
        var forwardPart = Part("sys-firewall", "hop4.");
        void AssertAsDeclared()
        {
            var inventory = root.Backend.GetInventory();
            Assert.Empty(Agent.AgentFeatures.Changes(inventory, Agent.AgentFeatures.DeriveAll(inventory)));
        }

        // the link's plan reads sys-firewall's keys: the forward's part stays, with the qube's new gen
        Assert.Null(InterVmLinkPlanner.Apply(root.Backend, InterVmLinkPlanner.PlanEnable(root.Backend, [Link("work", "personal", 5432)], options)).Failure);
        Assert.NotEqual(forwardPart, Part("sys-firewall", "hop4."));
        Assert.Equal(Strip(forwardPart), Strip(Part("sys-firewall", "hop4.")));
        Assert.EndsWith(" from=work vm=personal", Part("sys-firewall", "lnet4."));
        AssertAsDeclared();

        Assert.Null(InterVmLinkPlanner.Apply(root.Backend, InterVmLinkPlanner.PlanDisable(root.Backend, [Link("work", "personal", 5432)], options)).Failure);
        Assert.DoesNotContain(root.Backend.GetInventory().Get("sys-firewall").Features.Keys, k => k.StartsWith("vm-config.qubesfw.lnet", StringComparison.Ordinal));
        Assert.Equal(forwardPart, Part("sys-firewall", "hop4.")); // the set it had before the link, gen included
        AssertAsDeclared();

        static string Strip(string value) => System.Text.RegularExpressions.Regex.Replace(value, " gen=[0-9a-f]{16} ", " ");
    }

    [Fact]
    public void Dotted_destination_names_round_trip_through_the_feature()
    {
        using var root = new TempRoot(QubesXmlBuilder.Standard().Qube("db.prod", 20, "sys-firewall", template: "fedora-42").Build());
        var plan = InterVmLinkPlanner.PlanEnable(root.Backend, [Link("work", "db.prod", 5432)], DeploymentOptions.For(root.Backend, root.Now));
        Assert.Null(InterVmLinkPlanner.Apply(root.Backend, plan).Failure);
        Assert.Contains("qubesfirewall.link.db.prod.tcp.5432", root.Backend.GetInventory().Get("work").Features.Keys);
        var listed = InterVmLinkPlanner.List(root.Backend.GetInventory(), root.Backend.GetFirewall, root.Now).Single();
        Assert.Equal("db.prod", listed.To);
        Assert.True(listed.IsComplete);
    }

    [Fact]
    public void With_ipv6_on_the_link_adds_dst6_and_ip6_rules_and_without_it_none()
    {
        var ipv6 = new QubesXmlBuilder()
            .Qube("fedora-42", 1, null, cls: "TemplateVM")
            .Qube("sys-net", 2, null, providesNetwork: true, template: "fedora-42", features: new Dictionary<string, string> { ["ipv6"] = "1" })
            .Qube("sys-firewall", 3, "sys-net", providesNetwork: true, template: "fedora-42")
            .Qube("personal", 10, "sys-firewall", template: "fedora-42")
            .Qube("work", 11, "sys-firewall", template: "fedora-42")
            .Qube("untrusted", 12, "sys-firewall", template: "fedora-42", features: new Dictionary<string, string> { ["ipv6"] = "" });
        using var root = new TempRoot(ipv6.Build());
        var plan = InterVmLinkPlanner.PlanEnable(root.Backend, [Link("work", "personal", 5432)], DeploymentOptions.For(root.Backend, root.Now));
        Assert.Null(InterVmLinkPlanner.Apply(root.Backend, plan).Failure);
        var rules = root.Backend.GetFirewall("work").Rules.Select(r => r.Text).ToList();
        Assert.Equal(
            [
                "action=accept dst4=10.137.0.10/32 proto=tcp dstports=5432-5432 comment=qubesfirewall link to personal",
                "action=accept dst6=fd09:24ef:4179::a89:a/128 proto=tcp dstports=5432-5432 comment=qubesfirewall link to personal",
                "action=accept",
            ], rules);
        Assert.Contains(" proto=tcp ports=5432 src=fd09:24ef:4179::a89:b dst=fd09:24ef:4179::a89:a from=work vm=personal", Assert.Single(LinkKeys(root, "sys-firewall", "lnet6")));
        Assert.Contains(" src=10.137.0.11 dst=10.137.0.10 ", Assert.Single(LinkKeys(root, "sys-firewall", "lnet4")));
        Assert.Single(LinkKeys(root, "personal", "ldst6"));
        Assert.True(InterVmLinkPlanner.List(root.Backend.GetInventory(), root.Backend.GetFirewall, root.Now).Single().IPv6);

        // untrusted opted out of IPv6: its link is IPv4 only
        var v4 = InterVmLinkPlanner.PlanEnable(root.Backend, [Link("work", "untrusted", 80)], DeploymentOptions.For(root.Backend, root.Now));
        Assert.DoesNotContain(v4.Steps, s => s.FeatureName is { } f && (f.Contains(".lnet6.", StringComparison.Ordinal) || f.Contains(".ldst6.", StringComparison.Ordinal)) && s.FeatureValue!.Contains(" vm=untrusted", StringComparison.Ordinal));
        Assert.Contains(v4.Steps, s => s.VMName == "sys-firewall" && s.FeatureValue is { } v && v.Contains(" proto=tcp ports=80 src=10.137.0.11 dst=10.137.0.12 from=work vm=untrusted", StringComparison.Ordinal));
        Assert.DoesNotContain("dst6", v4.Steps.Single(s => s.Kind == DeploymentStepKind.EditFirewall).Description);
    }

    [Fact]
    public void The_audit_reports_a_link_missing_a_part_with_a_fix()
    {
        Enable(Link("work", "personal", 5432));
        AuditContext Context() => new(_root.Backend.GetInventory(), _root.Backend.GetFirewall, _root.Now, _root.Backend.ReadQubeFile);
        Assert.DoesNotContain(FirewallAudit.Run(Context(), [_root.Backend.GetInventory().Get("work")]), f => f.Check == InterVmLinkAuditCheck.LinkIncomplete);

        // the destination lost its key (removed by hand): dom0 facts alone say so, nothing is read from a qube
        var key = Keys("personal").Keys.Single(k => k.StartsWith(Agent.AgentFeatures.Prefix + "ldst4.", StringComparison.Ordinal));
        _root.Backend.RemoveFeature("personal", key);
        var finding = Assert.Single(FirewallAudit.Run(new AuditContext(_root.Backend.GetInventory(), _root.Backend.GetFirewall, _root.Now), [_root.Backend.GetInventory().Get("work")]), f => f.Check == InterVmLinkAuditCheck.LinkIncomplete);
        Assert.Equal(AuditSeverity.Error, finding.Severity);
        Assert.Equal("work", finding.VMName);
        Assert.Contains("the input accept in personal's agent keys", finding.Message);
        Assert.DoesNotContain("sys-firewall's agent keys", finding.Message);
        Assert.Equal("Enable-QubeInterVmNetwork -From work -To personal -Protocol Tcp -Port 5432", finding.Fix);

        // the two qubes no longer share a netvm
        _root.Backend.SetProperty("personal", "netvm", "sys-vpn");
        var moved = Assert.Single(FirewallAudit.Run(Context(), [_root.Backend.GetInventory().Get("work")]), f => f.Check == InterVmLinkAuditCheck.LinkIncomplete);
        Assert.Contains("cannot work", moved.Message);
        Assert.Contains("Disable-QubeInterVmNetwork", moved.Fix);
    }
}
