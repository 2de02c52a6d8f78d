using QubesFirewall.Engine.Formats;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;
using static QubesFirewall.Engine.Tests.TestQubes;

namespace QubesFirewall.Engine.Tests;

/// <summary>
/// The audit on a hand-made system, with the findings worked out by hand for each rule list:
/// which network qube enforces (or does not), rules after a catch-all, host names, /0 networks,
/// IPv6, expiry, rules qubesd refuses, and the Qube Manager's tab.
/// </summary>
public sealed class FirewallAuditTests
{
    // 2030-01-01 00:00:00 UTC.
    private static readonly DateTimeOffset Now = DateTimeOffset.FromUnixTimeSeconds(1893456000);

    private static readonly QubesInventory System = Inventory("sys-firewall", null,
        new Q("fedora", 1, Class: "TemplateVM"),
        new Q("sys-net", 2, NetVm: "", Provides: true, Template: "fedora"),
        new Q("sys-firewall", 3, NetVm: "sys-net", Provides: true, Template: "fedora"),
        new Q("sys-whonix", 4, NetVm: "sys-firewall", Provides: true, Template: "whonix-gateway-17"),
        new Q("vpn", 5, NetVm: "sys-firewall", Provides: true, Template: "fedora", Features: F(("service.qubes-firewall", ""))),
        new Q("vpn2", 6, NetVm: "sys-firewall", Provides: true, Template: "fedora", Features: F(("service.qubes-firewall", "0"))),
        new Q("work", 7, Template: "fedora"),
        new Q("anon", 8, NetVm: "sys-whonix", Template: "fedora"),
        new Q("behind-vpn", 9, NetVm: "vpn", Template: "fedora"),
        new Q("vault", 10, NetVm: "", Template: "fedora"),
        new Q("behind-vpn2", 11, NetVm: "vpn2", Template: "fedora"),
        // as Qubes has it: the salt (qvm/template-whonix-gateway.sls) or the template's own request sets whonix-gw
        new Q("whonix-gateway-17", 12, Class: "TemplateVM", Features: F(("whonix-gw", "1"))),
        new Q("sys-old", 13, NetVm: "sys-firewall", Provides: true, Template: "old-tpl"),
        new Q("old-tpl", 14, Class: "TemplateVM", Features: F(("qubes-firewall", ""))),
        new Q("legacy", 15, NetVm: "sys-old", Template: "fedora"),
        new Q("v6", 16, Template: "fedora", Features: F(("ipv6", "1"))),
        new Q("gw", 17, NetVm: "sys-firewall", Provides: true, Template: "fedora", Tags: ["anon-gateway"]),
        new Q("behind-gw", 18, NetVm: "gw", Template: "fedora"));

    private static IReadOnlyList<AuditFinding> Audit(string qube, FirewallDocument? rules = null) =>
        FirewallAudit.Audit(new AuditContext(System, n => n == qube && rules is not null ? rules : FirewallDocument.Default, Now), System.Get(qube));

    private static List<(AuditSeverity, string, int?)> Shape(IEnumerable<AuditFinding> findings) =>
        findings.Select(f => (f.Severity, f.Check, f.Number)).ToList();

    // ------------------------------------------------------------------ who enforces

    [Fact]
    public void Rules_are_enforced_in_the_network_qube()
    {
        var f = Assert.Single(Audit("work"));
        Assert.Equal((AuditSeverity.Info, "work", AuditChecks.EnforcedIn, (int?)null), (f.Severity, f.VMName, f.Check, f.Number));
        Assert.Equal("The rules of 'work' are enforced in 'sys-firewall' (for 10.137.0.7): its qubes-firewall service builds the qube's chain from them.", f.Message);
        Assert.Null(f.Fix);
    }

    [Fact]
    public void A_Whonix_gateway_enforces_nothing_an_error_once_the_list_restricts()
    {
        var open = Assert.Single(Audit("anon"));
        Assert.Equal((AuditSeverity.Info, AuditChecks.NotEnforced), (open.Severity, open.Check));
        Assert.Contains("'sys-whonix' does not enforce them (it is a Whonix gateway", open.Message);
        Assert.Contains("accepts everything, so nothing is lost today", open.Message);

        var findings = Audit("anon", Rules("action=accept specialtarget=dns", "action=drop"));
        Assert.Equal([(AuditSeverity.Error, AuditChecks.NotEnforced, null), (AuditSeverity.Info, AuditChecks.QubeManagerShape, null)], Shape(findings));
        Assert.Contains("are NOT enforced", findings[0].Message);
        // Never advice that takes the qube off Tor: no netvm change, no Fix; the message points to qubes.ConnectTCP.
        Assert.Null(findings[0].Fix);
        Assert.DoesNotContain("qvm-prefs", findings[0].Message);
        Assert.Contains("Do not move 'anon' off 'sys-whonix' for this: that would take it off Tor", findings[0].Message);
        Assert.Contains("qubes.ConnectTCP (Add-QubeTcpBinding)", findings[0].Message);
    }

    [Fact]
    public void A_gateway_tagged_anon_gateway_counts_as_Whonix()
    {
        var findings = Audit("behind-gw", Rules("action=drop dst4=192.0.2.0/24", "action=accept"));
        Assert.Equal([(AuditSeverity.Error, AuditChecks.NotEnforced, null), (AuditSeverity.Info, AuditChecks.QubeManagerShape, 0)], Shape(findings));
        Assert.Contains("'gw' does not enforce them (it is a Whonix gateway", findings[0].Message);
    }

    [Fact]
    public void A_network_qube_with_the_service_turned_off_does_not_enforce()
    {
        var findings = Audit("behind-vpn", Rules("action=drop dst4=192.0.2.0/24", "action=accept"));
        Assert.Equal([(AuditSeverity.Error, AuditChecks.NotEnforced, null), (AuditSeverity.Info, AuditChecks.QubeManagerShape, 0)], Shape(findings));
        Assert.Contains("its qubes-firewall service is turned off (feature service.qubes-firewall is empty", findings[0].Message);
        // qvm-service is no command of this module: it is told in the message, and the Fix is empty.
        Assert.Null(findings[0].Fix);
        Assert.Contains("'qvm-service --enable vpn qubes-firewall' in dom0 and a restart of vpn turn it on", findings[0].Message);
    }

    [Fact]
    public void The_value_0_does_not_turn_the_service_off()
    {
        var f = Assert.Single(Audit("behind-vpn2"));
        Assert.Equal(AuditChecks.EnforcedIn, f.Check);
        Assert.Contains("its feature service.qubes-firewall is '0', which qubesd reads as on", f.Message);
    }

    [Fact]
    public void A_template_without_the_service_enabled_does_not_enforce()
    {
        var f = Assert.Single(Audit("legacy"));
        Assert.Equal((AuditSeverity.Info, AuditChecks.NotEnforced), (f.Severity, f.Check));
        Assert.Contains("its template 'old-tpl' reports that the qubes-firewall service is not enabled there", f.Message);
        Assert.Null(f.Fix);
        Assert.Contains("in 'old-tpl', 'sudo systemctl enable qubes-firewall.service' (package qubes-core-agent-networking), then restart sys-old", f.Message);
    }

    // ------------------------------------------------------------------ dead rules

    private static readonly FirewallDocument DeadList = Rules(
        "action=accept specialtarget=dns",                             // 0
        "action=accept proto=icmp",                                    // 1
        "action=drop",                                                 // 2  the first catch-all
        "action=accept dst4=10.0.0.0/8 proto=tcp dstports=22",         // 3  dead, another action: move
        "action=accept proto=icmp",                                    // 4  dead copy of 1
        "action=drop dst4=192.0.2.1",                                  // 5  dead, same action: no effect
        "action=accept dsthost=example.com proto=tcp dstports=443",    // 6  dead, move; also a host name
        "action=accept");                                              // 7  dead catch-all of the other action

    [Fact]
    public void Rules_after_a_catch_all_are_dead()
    {
        var findings = Audit("work", DeadList);
        Assert.Equal(
        [
            (AuditSeverity.Info, AuditChecks.EnforcedIn, null),
            (AuditSeverity.Error, AuditChecks.DeadRule, 3),
            (AuditSeverity.Info, AuditChecks.DeadRule, 4),
            (AuditSeverity.Info, AuditChecks.DeadRule, 5),
            (AuditSeverity.Error, AuditChecks.DeadRule, 6),
            (AuditSeverity.Error, AuditChecks.DeadRule, 7),
            (AuditSeverity.Warning, AuditChecks.HostName, 6),
            (AuditSeverity.Info, AuditChecks.QubeManagerShape, 5),
        ], Shape(findings));
        // The whole list, the two rules of another action moved in front of the catch-all (rule 2), the copy of rule 1 left out, everything else in its order.
        const string move = "'action=accept specialtarget=dns', 'action=accept proto=icmp', 'action=accept dst4=10.0.0.0/8 proto=tcp dstports=22-22', "
            + "'action=accept dsthost=example.com proto=tcp dstports=443-443', 'action=drop', 'action=drop dst4=192.0.2.1/32', 'action=accept' | Set-QubeFirewallRule -VMName work";
        Assert.Equal(move, findings[1].Fix);
        Assert.Equal(move, findings[4].Fix);
        Assert.Contains("rule 2 ('action=drop') before it drops everything", findings[1].Message);
        Assert.Contains("moves all 2 such rules in front of rule 2", findings[1].Message);
        Assert.Equal("'action=accept specialtarget=dns', 'action=accept proto=icmp', 'action=drop', 'action=accept dst4=10.0.0.0/8 proto=tcp dstports=22-22', "
            + "'action=drop dst4=192.0.2.1/32', 'action=accept dsthost=example.com proto=tcp dstports=443-443', 'action=accept' | Set-QubeFirewallRule -VMName work", findings[2].Fix);
        Assert.Contains("repeats rule 1", findings[2].Message);
        Assert.Contains("it would drop too: it has no effect", findings[3].Message);
        Assert.Contains("If it was meant to replace rule 2, remove rule 2 instead", findings[5].Message);
        Assert.Equal("'action=accept specialtarget=dns', 'action=accept proto=icmp', 'action=drop', 'action=accept dst4=10.0.0.0/8 proto=tcp dstports=22-22', "
            + "'action=accept proto=icmp', 'action=drop dst4=192.0.2.1/32', 'action=accept dsthost=example.com proto=tcp dstports=443-443' | Set-QubeFirewallRule -VMName work", findings[5].Fix);
        Assert.Equal("work", findings[1].Rule!.VMName);
    }

    [Fact]
    public void A_catch_all_with_an_expiry_shadows_only_until_it_expires()
    {
        // The Qube Manager's "allow everything for N minutes" rule first: the rules after it are not dead.
        var findings = Audit("work", Rules("action=accept expire=1893542400", "action=accept specialtarget=dns", "action=accept proto=icmp", "action=drop"));
        Assert.DoesNotContain(findings, f => f.Check == AuditChecks.DeadRule);
        Assert.DoesNotContain(findings, f => f.Check == AuditChecks.QubeManagerShape);
    }

    [Fact]
    public void No_catch_all_no_dead_rules()
    {
        var findings = Audit("work", Rules("action=accept dst4=10.0.0.0/8", "action=drop dst4=10.1.0.0/16"));
        Assert.DoesNotContain(findings, f => f.Check == AuditChecks.DeadRule);
    }

    // ------------------------------------------------------------------ host names, /0, IPv6

    [Fact]
    public void Host_names_and_zero_prefixes_warn()
    {
        var findings = Audit("work", Rules(
            "action=accept dst4=10.0.0.0/0 proto=tcp dstports=80",
            "action=accept dst6=::/0 proto=tcp dstports=443",
            "action=drop"));
        Assert.Equal(
        [
            (AuditSeverity.Info, AuditChecks.EnforcedIn, null),
            (AuditSeverity.Warning, AuditChecks.ZeroPrefix, 0),
            (AuditSeverity.Warning, AuditChecks.ZeroPrefix, 1),
            (AuditSeverity.Warning, AuditChecks.IPv6Rule, 1),
            (AuditSeverity.Info, AuditChecks.QubeManagerShape, null),
        ], Shape(findings));
        Assert.Contains("matches every IPv4 host", findings[1].Message);
        Assert.Contains("qubes-issues 9323", findings[1].Message);
        Assert.Equal("'action=accept dst4=10.0.0.0/0 proto=tcp dstports=80-80', 'action=accept proto=tcp dstports=443-443', 'action=drop' | Set-QubeFirewallRule -VMName work", findings[2].Fix);
        Assert.Equal("'action=accept dst4=10.0.0.0/0 proto=tcp dstports=80-80', 'action=drop' | Set-QubeFirewallRule -VMName work", findings[3].Fix);
        Assert.Contains("Set-QubeIPv6 -VMName sys-net -Enabled $true", findings[3].Message);
        Assert.Equal("'action=accept specialtarget=dns', 'action=accept proto=icmp' | Add-QubeFirewallRule -VMName work", findings[4].Fix);
        Assert.Contains("The fix adds the missing rules in front of the final drop", findings[4].Message);
    }

    [Fact]
    public void A_host_name_fails_closed_and_with_IPv6_needs_an_AAAA_record()
    {
        var plain = Audit("work", Rules("action=accept dsthost=updates.example.org", "action=accept")).Single(f => f.Check == AuditChecks.HostName);
        Assert.Equal((AuditSeverity.Warning, 0), (plain.Severity, plain.Number!.Value));
        Assert.Contains("resolved once, inside 'sys-firewall'", plain.Message);
        Assert.Contains("rejects ALL of 'work''s traffic", plain.Message);
        Assert.DoesNotContain("AAAA", plain.Message);
        // Only the user knows the addresses: no Fix, the message shows the rule to put in its place.
        Assert.Null(plain.Fix);
        Assert.Contains("put them in its place ('action=accept dst4=<address>/32'", plain.Message);

        var v6 = Audit("v6", Rules("action=accept dsthost=updates.example.org", "action=accept")).Single(f => f.Check == AuditChecks.HostName);
        Assert.Contains("AAAA", v6.Message);
    }

    [Fact]
    public void IPv6_on_a_qube_below_a_network_qube_without_it_warns()
    {
        var findings = Audit("v6");
        Assert.Equal([(AuditSeverity.Info, AuditChecks.EnforcedIn, null), (AuditSeverity.Warning, AuditChecks.IPv6WithoutUplink, null)], Shape(findings));
        Assert.Contains("(for 10.137.0.16 and fd09:24ef:4179::a89:10)", findings[0].Message);
        Assert.Contains("'v6' has an IPv6 address (fd09:24ef:4179::a89:10, from the ipv6 feature of 'v6')", findings[1].Message);
        Assert.Equal("Set-QubeIPv6 -VMName sys-net -Enabled $true", findings[1].Fix);
        Assert.Contains("to drop IPv6 here instead: Set-QubeIPv6 -VMName v6 -Inherit", findings[1].Message);
    }

    [Fact]
    public void An_IPv6_drop_rule_without_IPv6_is_only_info()
    {
        var f = Audit("work", Rules("action=drop dst6=2001:db8::/32", "action=accept")).Single(x => x.Check == AuditChecks.IPv6Rule);
        Assert.Equal(AuditSeverity.Info, f.Severity);
        Assert.Contains("there is no IPv6 traffic to drop", f.Message);
    }

    // ------------------------------------------------------------------ expiry, invalid rules

    [Fact]
    public void Expired_and_soon_expiring_rules()
    {
        var findings = Audit("work", Rules(
            "action=accept expire=1893452400 dst4=10.9.0.0/16",   // expired an hour ago: not shown by Get
            "action=accept expire=1893463200 dst4=10.8.0.0/16",   // in 2 hours: rule 0
            "action=accept expire=1893628800 dst4=10.7.0.0/16",   // in 2 days: rule 1
            "action=drop"));
        Assert.Equal(
        [
            (AuditSeverity.Info, AuditChecks.EnforcedIn, null),
            (AuditSeverity.Info, AuditChecks.Expired, null),
            (AuditSeverity.Warning, AuditChecks.ExpiresSoon, 0),
            (AuditSeverity.Info, AuditChecks.QubeManagerShape, 1),
        ], Shape(findings));
        Assert.Contains("'action=accept expire=1893452400 dst4=10.9.0.0/16' expired on 2029-12-31 23:00:00 UTC", findings[1].Message);
        Assert.Null(findings[1].Fix);
        Assert.Contains("to have it for another week, add 'action=accept expire=+604800 dst4=10.9.0.0/16' again", findings[1].Message);
        Assert.Contains("expires on 2030-01-01 02:00:00 UTC, in 2 h 0 min", findings[2].Message);
        Assert.Null(findings[2].Fix);
        Assert.Contains("put 'action=accept expire=+604800 dst4=10.8.0.0/16' in its place", findings[2].Message);
    }

    [Fact]
    public void Rules_an_older_qubesd_let_in_are_errors()
    {
        var rules = FromXml(
            [("action", "accept"), ("proto", "tcp"), ("dstports", "65536")],
            [("action", "accept"), ("dsthost", "")],
            [("action", "drop")]);
        var findings = Audit("work", rules);
        Assert.Equal(
        [
            (AuditSeverity.Info, AuditChecks.EnforcedIn, null),
            (AuditSeverity.Error, AuditChecks.InvalidRule, 0),
            (AuditSeverity.Error, AuditChecks.InvalidRule, 1),
            (AuditSeverity.Info, AuditChecks.QubeManagerShape, null),
        ], Shape(findings));
        Assert.Contains("dstports '65536' is out of range", findings[1].Message);
        // One Set without both invalid rules (a list that still holds one is refused), the same for each.
        Assert.Equal("'action=drop' | Set-QubeFirewallRule -VMName work", findings[1].Fix);
        Assert.Equal(findings[1].Fix, findings[2].Fix);
        Assert.Contains("The fix sets the list without the 2 invalid rules", findings[1].Message);
        Assert.Contains("dsthost '' is invalid", findings[2].Message);
    }

    [Fact]
    public void An_unreadable_list_is_one_error()
    {
        var context = new AuditContext(System, _ => throw new QubesFirewallException("InvalidFirewallXml", FailureKind.InvalidData, "Cannot read x: bad."), Now);
        var f = Assert.Single(FirewallAudit.Audit(context, System.Get("work")));
        Assert.Equal((AuditSeverity.Error, AuditChecks.UnreadableFirewall), (f.Severity, f.Check));
        Assert.Contains("Cannot read x: bad.", f.Message);
    }

    [Fact]
    public void Without_a_network_qube_rules_are_unused_but_invalid_ones_still_count()
    {
        Assert.Equal([(AuditSeverity.Info, AuditChecks.NoNetVM, null)], Shape(Audit("vault", Rules("action=drop"))));
        var findings = Audit("vault", FromXml([("action", "accept"), ("proto", "udp"), ("dstports", "70000")], [("action", "drop")]));
        Assert.Equal([(AuditSeverity.Info, AuditChecks.NoNetVM, null), (AuditSeverity.Error, AuditChecks.InvalidRule, 0)], Shape(findings));
    }

    // ------------------------------------------------------------------ the Qube Manager's tab

    [Theory]
    [InlineData(null, "action=accept")]
    [InlineData(null, "action=accept specialtarget=dns", "action=accept proto=icmp", "action=accept dst4=1.2.3.4 proto=tcp dstports=443 comment=web", "action=drop")]
    [InlineData(null, "action=accept proto=icmp", "action=accept expire=1893459600", "action=accept specialtarget=dns", "action=drop")]
    [InlineData(null, "action=accept specialtarget=dns", "action=accept proto=icmp", "action=drop dst4=0.0.0.0/0")]  // qubesadmin drops /0: a plain drop
    [InlineData("it ends in drop without 'action=accept proto=icmp'", "action=accept specialtarget=dns", "action=drop")]
    [InlineData("its last rule, 2 ('action=drop comment=end'), is not a plain", "action=accept specialtarget=dns", "action=accept proto=icmp", "action=drop comment=end")]
    [InlineData("its last rule, 0 ('action=accept proto=tcp'), is not a plain", "action=accept proto=tcp")]
    [InlineData("rule 2 ('action=accept specialtarget=dns comment=resolver') has a special target", "action=accept specialtarget=dns", "action=accept proto=icmp", "action=accept specialtarget=dns comment=resolver", "action=drop")]
    [InlineData("rule 1 ('action=accept proto=icmp icmptype=8') has a special target or ICMP type", "action=accept specialtarget=dns", "action=accept proto=icmp icmptype=8", "action=accept")]
    [InlineData("rule 0 ('action=drop dst4=10.0.0.0/8') drops", "action=drop dst4=10.0.0.0/8", "action=accept")]
    [InlineData("rule 0 ('action=accept') is none of the kinds", "action=accept", "action=drop")]
    [InlineData("rule 0 ('action=accept expire=1893459600 dst4=10.0.0.0/8') is none of the kinds", "action=accept expire=1893459600 dst4=10.0.0.0/8", "action=accept")]
    public void The_Qube_Manager_tab_shape(string? problem, params string[] lines)
    {
        var rules = QubeFirewallRule.Visible("work", lines.Select(l => RuleText.Parse(l)).ToList(), Now);
        var (found, _, _) = FirewallAudit.QubeManagerProblem("work", rules);
        if (problem is null) Assert.Null(found);
        else Assert.StartsWith(problem, found);
    }

    [Fact]
    public void The_sample_lists_against_the_tab()
    {
        var work = QubeFirewallRule.Visible("work", FirewallXml.Load(Path.Combine(QubesXmlTests.SampleRoot, "appvms", "work", "firewall.xml")).Rules, Now);
        Assert.Null(FirewallAudit.QubeManagerProblem("work", work).Problem);
        // personal's version 1 file (policy deny) has no final rule: qubesd's policy drops the rest, the tab gives up.
        var personal = QubeFirewallRule.Visible("personal", FirewallXml.Load(Path.Combine(QubesXmlTests.SampleRoot, "appvms", "personal", "firewall.xml")).Rules, Now);
        Assert.StartsWith("its last rule, 4 ", FirewallAudit.QubeManagerProblem("personal", personal).Problem);
    }

    // ------------------------------------------------------------------ targets and extensions

    [Fact]
    public void By_default_every_qube_with_a_network_qube_in_qubes_xml_order()
    {
        Assert.Equal(["sys-firewall", "sys-whonix", "vpn", "vpn2", "work", "anon", "behind-vpn", "behind-vpn2", "sys-old", "legacy", "v6", "gw", "behind-gw"],
            FirewallAudit.DefaultTargets(System).Select(q => q.Name));
    }

    [Fact]
    public void By_default_also_the_qubes_without_a_network_qube_that_have_a_feature_of_the_module()
    {
        // sys-net, the outermost hop, carries agent keys; vault a declaration it cannot use; sys-usb only a feature of Qubes'
        var inventory = Inventory("sys-firewall", null,
            new Q("fedora", 1, Class: "TemplateVM", Features: F(("qubesfirewall.agent", "0.1.0"))),
            new Q("sys-net", 2, NetVm: "", Provides: true, Template: "fedora", Features: F(("vm-config.qubesfw.gen", "for=sys-net gen=0123456789abcdef keys=0"))),
            new Q("sys-usb", 3, NetVm: "", Template: "fedora", Features: F(("service.qubes-firewall", ""))),
            new Q("sys-firewall", 4, NetVm: "sys-net", Provides: true, Template: "fedora"),
            new Q("vault", 5, NetVm: "", Template: "fedora", Features: F(("qubesfirewall.forward.tcp.80", "target=80 type=external allow=any"))),
            new Q("work", 6, Template: "fedora"));
        Assert.Equal(["fedora", "sys-net", "sys-firewall", "vault", "work"], FirewallAudit.DefaultTargets(inventory).Select(q => q.Name));
    }

    [Fact]
    public void Dom0_has_nothing_to_audit()
    {
        var inventory = QubesXml.Parse(File.ReadAllText(Path.Combine(QubesXmlTests.SampleRoot, "qubes.xml")));
        Assert.Empty(FirewallAudit.Audit(new AuditContext(inventory, _ => FirewallDocument.Default, Now), inventory.Get("dom0")));
    }

    private sealed class MarkerCheck : IAuditCheck
    {
        public string Name => "marker";
        public IEnumerable<AuditFinding> Run(AuditContext context, Qube qube) =>
            [new AuditFinding(AuditSeverity.Warning, qube.Name, "Marker", null, $"checked {qube.Name} at {context.Now.ToUnixTimeSeconds()}", null)];
    }

    [Fact]
    public void Extension_checks_run_after_the_built_in_ones_for_every_qube()
    {
        var context = new AuditContext(System, _ => FirewallDocument.Default, Now);
        var findings = FirewallAudit.Run(context, [System.Get("work"), System.Get("vault")], [.. FirewallAudit.BuiltInChecks, new MarkerCheck()]);
        Assert.Equal(
        [
            ("work", AuditChecks.EnforcedIn),
            ("work", "Marker"),
            ("vault", AuditChecks.NoNetVM),
            ("vault", "Marker"),
        ], findings.Select(f => (f.VMName, f.Check)));
        Assert.Equal("checked work at 1893456000", findings[1].Message);
    }

    private sealed class FailingCheck : IAuditCheck
    {
        public string Name => "reads-a-file";
        public IEnumerable<AuditFinding> Run(AuditContext context, Qube qube)
        {
            yield return new AuditFinding(AuditSeverity.Info, qube.Name, "Partial", null, "before the failure", null);
            throw new QubesFirewallException("QubeNotRunning", FailureKind.ResourceUnavailable, "'work' is halted.");
        }
    }

    [Fact]
    public void A_check_that_fails_is_a_warning_and_the_audit_goes_on()
    {
        var context = new AuditContext(System, _ => FirewallDocument.Default, Now);
        var findings = FirewallAudit.Run(context, [System.Get("work"), System.Get("vault")], [new FailingCheck(), .. FirewallAudit.BuiltInChecks]);
        // What the check found before it failed stays; the failure is a warning; the next checks and qubes still run.
        Assert.Equal(
        [
            ("work", "Partial"), ("work", AuditChecks.CheckFailed), ("work", AuditChecks.EnforcedIn),
            ("vault", AuditChecks.NoNetVM), ("vault", "Partial"), ("vault", AuditChecks.CheckFailed),
        ], findings.Select(f => (f.VMName, f.Check)));
        Assert.Equal(AuditSeverity.Warning, findings[1].Severity);
        Assert.Equal("The check 'reads-a-file' could not finish for 'work': 'work' is halted. Fix what that says, then run Test-QubeFirewall again.", findings[1].Message);
        Assert.Null(findings[1].Fix);
    }

    [Fact]
    public void The_audit_is_deterministic()
    {
        var a = Audit("work", DeadList);
        var b = Audit("work", DeadList);
        Assert.Equal(a.Select(f => f.ToString() + f.Fix), b.Select(f => f.ToString() + f.Fix));
    }
}
