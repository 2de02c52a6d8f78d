using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Persistence;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.Engine.Tests;

/// <summary>
/// Test-QubeFirewall's port forward checks on an offline root where the forwards are added and removed by the
/// real planner: a disposable (or disposable template) on the way, custom-persist on the way, and a forward
/// missing a part or a part no declaration gives. Each fix the findings suggest is applied and clears them.
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class ForwardAuditTests : IDisposable
{
    private TempRoot _root = new(Layout().Build());

    public void Dispose() => _root.Dispose();

    private static QubesXmlBuilder Layout(string sysFirewallClass = "AppVM", Dictionary<string, string>? sysNetFeatures = null, Dictionary<string, string>? sysFirewallProps = null) =>
        new QubesXmlBuilder()
            .Qube("fedora-42", 1, null, cls: "TemplateVM", features: new Dictionary<string, string> { ["qubes-agent-version"] = "4.2.17" })
            .Qube("dvm", 5, null, template: "fedora-42", properties: new Dictionary<string, string> { ["template_for_dispvms"] = "True" })
            .Qube("sys-net", 2, null, providesNetwork: true, template: "fedora-42", features: sysNetFeatures)
            .Qube("sys-firewall", 3, "sys-net", providesNetwork: true, cls: sysFirewallClass, template: sysFirewallClass == "DispVM" ? "dvm" : "fedora-42",
                dispid: sysFirewallClass == "DispVM" ? 30 : null, properties: sysFirewallProps)
            .Qube("work", 11, "sys-firewall", template: "fedora-42")
            .Qube("personal", 10, "sys-firewall", template: "fedora-42");

    private void Use(QubesXmlBuilder layout)
    {
        _root.Dispose();
        _root = new TempRoot(layout.Build());
    }

    private static readonly PortForward Web = PortForward.Create("work", ForwardProtocol.Tcp, 443, 8443, allowFrom: ["192.168.1.0/24"]);

    private void Add(PortForward f, bool force = false) =>
        Assert.Null(PortForwardPlanner.Apply(_root.Backend, PortForwardPlanner.PlanAdd(_root.Backend, f, DeploymentOptions.For(_root.Backend, _root.Now, force))).Failure);

    private void Remove(string vm, ForwardProtocol p, int port) =>
        Assert.Null(PortForwardPlanner.Apply(_root.Backend, PortForwardPlanner.PlanRemove(_root.Backend, vm, p, port, DeploymentOptions.For(_root.Backend, _root.Now))).Failure);

    private List<AuditFinding> Audit(string qube, Func<string, string, string?>? read = null)
    {
        var inventory = _root.Backend.GetInventory();
        var context = new AuditContext(inventory, _root.Backend.GetFirewall, _root.Now, read ?? _root.Backend.ReadQubeFile);
        return FirewallAudit.Audit(context, inventory.Get(qube)).Where(f => f.Check.StartsWith("Forward", StringComparison.Ordinal) || f.Check == AuditChecks.CheckFailed).ToList();
    }

    [Fact]
    public void The_checks_run_by_default_and_a_forward_applied_by_the_planner_has_no_finding()
    {
        Assert.Equal(ForwardAuditChecks.All, FirewallAudit.DefaultChecks().Where(c => c.Name.StartsWith("forward-", StringComparison.Ordinal)));
        Add(Web);
        Add(PortForward.Create("personal", ForwardProtocol.Udp, 53, type: ForwardType.Internal));
        foreach (var qube in new[] { "work", "personal", "sys-firewall", "sys-net" }) Assert.Empty(Audit(qube));
    }

    [Fact]
    public void A_disposable_hop_is_a_warning_naming_its_template_and_its_part_there_counts_as_present()
    {
        Use(Layout(sysFirewallClass: "DispVM"));
        Add(Web, force: true);
        var f = Assert.Single(Audit("work"));
        Assert.Equal((AuditSeverity.Warning, "work", ForwardAuditChecks.DisposableHop), (f.Severity, f.VMName, f.Check));
        Assert.Null(f.Rule);
        Assert.Contains("passes through 'sys-firewall' (hop 2 of 2), a disposable of 'dvm'", f.Message);
        Assert.Contains("dvm:/rw/config/qubes-firewall-user-script", f.Message);
        Assert.StartsWith("Make 'sys-firewall' a regular qube (qvm-create --class AppVM --property provides_network=True", f.Fix);
        Assert.Contains("Get-QubePortForward -VMName work -Port 443 -Protocol Tcp | Add-QubePortForward -Force", f.Fix);
        // the part kept in dvm's file, inside the guard for sys-firewall, is found: no missing-part finding above.
        // Taken out of the file, it is missing:
        var content = _root.Backend.ReadQubeFile("dvm", ForwardPersistence.FirewallUserScript)!;
        _root.Backend.WriteQubeFile("dvm", ForwardPersistence.FirewallUserScript, ManagedBlock.Remove(content)!, ManagedBlock.FileMode);
        var missing = Assert.Single(Audit("work"), x => x.Check == ForwardAuditChecks.MissingPart);
        Assert.Contains("dvm:/rw/config/qubes-firewall-user-script (kept there for the disposable sys-firewall) does not hold its part", missing.Message);
    }

    [Fact]
    public void A_disposable_template_on_the_way_is_a_warning_too()
    {
        Use(Layout(sysFirewallProps: new Dictionary<string, string> { ["template_for_dispvms"] = "True" }));
        Add(Web);
        var f = Assert.Single(Audit("work"));
        Assert.Equal(ForwardAuditChecks.DisposableHop, f.Check);
        Assert.Contains("'sys-firewall' (hop 2 of 2), a disposable template", f.Message);
        Assert.Contains("qvm-prefs sys-firewall template_for_dispvms False", f.Fix);
    }

    [Fact]
    public void Custom_persist_on_the_way_is_a_warning_with_the_way_out_and_off_means_off()
    {
        Use(Layout(sysNetFeatures: new Dictionary<string, string> { ["service.custom-persist"] = "1" }));
        Add(Web);
        var f = Assert.Single(Audit("work"));
        Assert.Equal((AuditSeverity.Warning, ForwardAuditChecks.CustomPersistHop), (f.Severity, f.Check));
        Assert.Contains("'sys-net' (hop 1 of 2), which has the R4.3 custom-persist service on", f.Message);
        Assert.Contains("/rw/config/qubes-firewall-user-script at start", f.Message);
        Assert.StartsWith("Turn custom-persist off for it (qvm-service --disable sys-net custom-persist)", f.Fix);
        Assert.Contains("/etc/qubes/qubes-firewall.d/", f.Fix);

        _root.Backend.SetFeature("sys-net", "service.custom-persist", "");
        Assert.Empty(Audit("work"));
    }

    [Fact]
    public void A_hop_file_without_the_forward_is_an_error_whose_fix_restores_it()
    {
        Add(Web);
        var content = _root.Backend.ReadQubeFile("sys-firewall", ForwardPersistence.FirewallUserScript)!;
        _root.Backend.WriteQubeFile("sys-firewall", ForwardPersistence.FirewallUserScript, ManagedBlock.Remove(content)!, ManagedBlock.FileMode);

        var f = Assert.Single(Audit("work"));
        Assert.Equal((AuditSeverity.Error, "work", ForwardAuditChecks.MissingPart), (f.Severity, f.VMName, f.Check));
        Assert.Equal("tcp/443 -> work:8443 is declared (qubesfirewall.forward.tcp.443), but sys-firewall:/rw/config/qubes-firewall-user-script does not hold its part. " +
            "At sys-firewall's next start the forward does not work as declared.", f.Message);
        Assert.StartsWith("Get-QubePortForward -VMName work -Port 443 -Protocol Tcp | Add-QubePortForward (rewrites", f.Fix);

        Add(Web); // what the fix runs: the same declaration again
        Assert.Empty(Audit("work"));
    }

    [Fact]
    public void A_declaration_without_any_script_and_one_changed_by_hand_are_missing_parts()
    {
        _root.Backend.SetFeature("work", Web.FeatureName, Web.FeatureValue);
        var never = Audit("work");
        Assert.Equal(3, never.Count);
        Assert.All(never, f => Assert.Equal(ForwardAuditChecks.MissingPart, f.Check));
        Assert.Equal(["sys-net:", "sys-firewall:", "work:"], never.Select(f => f.Message.Split(" but ")[1].Split('/')[0]));

        Add(Web);
        Assert.Empty(Audit("work"));
        _root.Backend.SetFeature("work", Web.FeatureName, "target=8444 type=external allow=192.168.1.0/24");
        var changed = Audit("work");
        Assert.Equal(2, changed.Count); // sys-net translates to sys-firewall whatever the target port: unchanged there
        Assert.All(changed, f => Assert.Contains("holds another version of its part", f.Message));
        Assert.Contains("(2 rules missing, 2 not declared)", changed[0].Message); // sys-firewall: translation and accept
        Assert.Contains("(1 rule missing, 1 not declared)", changed[1].Message); // work: its input accept
    }

    [Fact]
    public void Forward_rules_no_declaration_gives_are_an_error_and_the_fix_removes_them()
    {
        Add(Web);
        _root.Backend.RemoveFeature("work", Web.FeatureName); // removed behind the module's back
        var findings = Audit("work");
        Assert.Equal(2, findings.Count); // the hops; a qube's own file is read only when it declares forwards or provides network
        Assert.All(findings, f => Assert.Equal((AuditSeverity.Error, ForwardAuditChecks.UndeclaredPart), (f.Severity, f.Check)));
        Assert.Equal("sys-net:/rw/config/qubes-firewall-user-script holds port forward rules for tcp/443 to 'work' (2 rules), but no declaration gives it (no feature qubesfirewall.forward.tcp.443 on work): " +
            "they open the port at sys-net's next start, and Get-QubePortForward does not show it.", findings[0].Message);
        var fix = findings[0].Fix!;
        // derived from the file's content: the fix rebuilds the files, it never opens anything (no Add-QubePortForward)
        Assert.StartsWith("Remove-QubePortForward -VMName work -Port 443 -Protocol Tcp -Confirm:$false", fix);
        Assert.All(findings, f => Assert.DoesNotContain("Add-Qube", f.Fix));

        // the fix, through the planner: the leftover rules go, nothing else changes
        Remove("work", ForwardProtocol.Tcp, 443);
        Assert.Null(ManagedBlock.Extract(_root.Backend.ReadQubeFile("sys-net", ForwardPersistence.FirewallUserScript)));
        Assert.Empty(Audit("work"));
    }

    [Fact]
    public void A_leftover_on_a_hop_other_forwards_cross_is_fixed_by_reapplying_one_of_them()
    {
        Add(Web);
        Add(PortForward.Create("personal", ForwardProtocol.Tcp, 22));
        _root.Backend.RemoveFeature("work", Web.FeatureName);
        var findings = Audit("work");
        Assert.Equal(2, findings.Count);
        Assert.All(findings, f => Assert.StartsWith("Get-QubePortForward -VMName personal -Port 22 -Protocol Tcp | Add-QubePortForward (re-applying", f.Fix));
        Add(PortForward.Create("personal", ForwardProtocol.Tcp, 22));
        Assert.Empty(Audit("work"));
    }

    [Fact]
    public void A_file_that_cannot_be_read_is_reported_and_the_other_qubes_are_still_checked()
    {
        Add(Web);
        var content = _root.Backend.ReadQubeFile("work", ForwardPersistence.RcLocal)!;
        _root.Backend.WriteQubeFile("work", ForwardPersistence.RcLocal, ManagedBlock.Remove(content)!, ManagedBlock.FileMode);
        var findings = Audit("work", (qube, path) => qube == "sys-net"
            ? throw new QubesFirewallException("QubeNotRunning", FailureKind.ResourceUnavailable, "'sys-net' is not running.", qube)
            : _root.Backend.ReadQubeFile(qube, path));
        Assert.Equal([AuditChecks.CheckFailed, ForwardAuditChecks.MissingPart], findings.Select(f => f.Check).OrderBy(c => c, StringComparer.Ordinal));
        Assert.Contains("could not be checked: 'sys-net' is not running.", findings.Single(f => f.Check == AuditChecks.CheckFailed).Message);
        Assert.Contains("work:/rw/config/rc.local does not hold its part", findings.Single(f => f.Check == ForwardAuditChecks.MissingPart).Message);
    }

    [Fact]
    public void Without_a_file_reader_the_parts_check_says_nothing()
    {
        _root.Backend.SetFeature("work", Web.FeatureName, Web.FeatureValue);
        var inventory = _root.Backend.GetInventory();
        var context = new AuditContext(inventory, _root.Backend.GetFirewall, _root.Now);
        Assert.DoesNotContain(FirewallAudit.Audit(context, inventory.Get("work")), f => f.Check.StartsWith("Forward", StringComparison.Ordinal));
    }
}
