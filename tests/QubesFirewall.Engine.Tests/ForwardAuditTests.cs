using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Persistence;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.Engine.Tests;

/// <summary>
/// Test-QubeFirewall's port forward checks on an offline root where the forwards are added and removed by the
/// real planner (through the agent): custom-persist on the way, and rules an earlier version left in hook files.
/// Each fix the findings suggest is applied and clears them.
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

    private void Add(PortForward f) =>
        Assert.Null(PortForwardPlanner.Apply(_root.Backend, PortForwardPlanner.PlanAdd(_root.Backend, f, DeploymentOptions.For(_root.Backend, _root.Now))).Failure);

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
    public void A_disposable_sys_firewall_or_a_disposable_template_on_the_way_is_no_finding_their_keys_are_their_own()
    {
        // forwards reach qubes as features of the qube itself (qubesd exports them at each start): nothing lives in the template's /rw
        Use(Layout(sysFirewallClass: "DispVM"));
        Add(Web);
        Assert.Empty(Audit("work"));
        Assert.Contains(_root.Backend.GetInventory().Get("sys-firewall").Features, f => f.Key.StartsWith(Agent.AgentFeatures.Prefix, StringComparison.Ordinal) && f.Value.StartsWith("for=sys-firewall ", StringComparison.Ordinal));
        Assert.Null(_root.Backend.ReadQubeFile("dvm", HookFiles.FirewallUserScript));

        // a disposable template on the way: its keys name it, so the agent of a disposable started from it refuses them
        Use(Layout(sysFirewallProps: new Dictionary<string, string> { ["template_for_dispvms"] = "True" }));
        Add(Web);
        Assert.Empty(Audit("work"));
        Assert.All(_root.Backend.GetInventory().Get("sys-firewall").Features.Where(f => f.Key.StartsWith(Agent.AgentFeatures.Prefix, StringComparison.Ordinal)),
            f => Assert.StartsWith("for=sys-firewall ", f.Value, StringComparison.Ordinal));
    }

    [Fact]
    public void Custom_persist_on_the_way_is_a_warning_with_the_way_out_and_off_means_off()
    {
        Use(Layout(sysNetFeatures: new Dictionary<string, string> { ["service.custom-persist"] = "1" }));
        Add(Web);
        var f = Assert.Single(Audit("work"));
        Assert.Equal((AuditSeverity.Warning, ForwardAuditChecks.CustomPersistHop), (f.Severity, f.Check));
        Assert.Contains("'sys-net' (hop 1 of 2), which has the R4.3 custom-persist service on", f.Message);
        Assert.Contains("does not run its /rw/config hooks at start, so its QubesFirewall agent does not start", f.Message);
        Assert.Null(f.Fix);
        Assert.Contains("Turn custom-persist off for it (qvm-service --disable sys-net custom-persist)", f.Message);
        Assert.Contains("/etc/qubes/qubes-firewall.d/", f.Message);

        _root.Backend.SetFeature("sys-net", "service.custom-persist", "");
        Assert.Empty(Audit("work"));
    }

    /// <summary>What an earlier version left: the managed block of each qube on the forward's way, as it wrote them (the user's own line above it).</summary>
    private void WriteEarlierVersionBlocks(params string[] qubes)
    {
        var inventory = _root.Backend.GetInventory();
        foreach (var qube in qubes)
        {
            var script = PortForwardPlanner.Export(inventory, qube)!;
            _root.Backend.WriteQubeFile(script.StoredIn, script.Path, ManagedBlock.Upsert("#!/bin/sh\necho mine\n", script.Script), ManagedBlock.FileMode);
        }
    }

    [Fact]
    public void Rules_an_earlier_version_left_in_hook_files_are_errors_whose_fix_installs_the_agent_which_removes_them()
    {
        Add(Web);
        WriteEarlierVersionBlocks("sys-net", "sys-firewall", "work");
        var findings = Audit("work");
        Assert.Equal(["sys-net", "sys-firewall", "work"], findings.Select(f => f.Message.Split(':')[0]));
        Assert.All(findings, f => Assert.Equal((AuditSeverity.Error, "work", ForwardAuditChecks.UndeclaredPart), (f.Severity, f.VMName, f.Check)));
        Assert.Equal("sys-net:/rw/config/qubes-firewall-user-script holds port forward rules for tcp/443 to 'work' (2 rules) in the managed block an earlier version wrote: " +
            "they are loaded again at sys-net's next start, beside what its agent applies. " +
            "The fix installs the agent there, which removes that block (your own lines in the file stay byte for byte); it opens nothing.", findings[0].Message);
        Assert.Equal(["Install-QubeFirewallAgent -VMName sys-net", "Install-QubeFirewallAgent -VMName sys-firewall", "Install-QubeFirewallAgent -VMName work"], findings.Select(f => f.Fix));

        // what the fixes run: the blocks go, the user's lines stay, the forward (its agent keys) is untouched
        var keys = _root.Backend.GetInventory().Get("sys-firewall").Features.Where(f => f.Key.StartsWith(Agent.AgentFeatures.Prefix, StringComparison.Ordinal)).ToList();
        foreach (var qube in new[] { "sys-net", "sys-firewall", "work" }) Agent.AgentInstaller.Install(_root.Backend, qube);
        Assert.Equal("#!/bin/sh\necho mine\n", _root.Backend.ReadQubeFile("sys-net", HookFiles.FirewallUserScript));
        Assert.Equal("#!/bin/sh\necho mine\n", _root.Backend.ReadQubeFile("work", HookFiles.RcLocal));
        Assert.Empty(Audit("work"));
        Assert.Equal(keys, _root.Backend.GetInventory().Get("sys-firewall").Features.Where(f => f.Key.StartsWith(Agent.AgentFeatures.Prefix, StringComparison.Ordinal)).ToList());
    }

    [Fact]
    public void Leftover_rules_no_declaration_gives_say_so_and_the_fix_opens_nothing()
    {
        Add(Web);
        WriteEarlierVersionBlocks("sys-net", "sys-firewall");
        Remove("work", ForwardProtocol.Tcp, 443);
        var findings = Audit("work");
        Assert.Equal(2, findings.Count);
        Assert.All(findings, f => Assert.Contains("and no declaration gives them (Get-QubePortForward does not show them)", f.Message));
        Assert.All(findings, f => Assert.StartsWith("Install-QubeFirewallAgent -VMName ", f.Fix));
    }

    [Fact]
    public void A_declaration_without_its_agent_keys_is_the_agent_checks_finding_not_a_forward_one()
    {
        _root.Backend.SetFeature("work", Web.FeatureName, Web.FeatureValue); // declared by hand: no keys derived and set
        Assert.Empty(Audit("work"));
        var inventory = _root.Backend.GetInventory();
        var context = new AuditContext(inventory, _root.Backend.GetFirewall, _root.Now, _root.Backend.ReadQubeFile);
        foreach (var qube in new[] { "sys-net", "sys-firewall", "work" })
            Assert.Contains(FirewallAudit.Audit(context, inventory.Get(qube)), f => f.Check == Agent.AgentAuditCheck.AgentKeysStale);
        Add(Web);
        inventory = _root.Backend.GetInventory();
        context = new AuditContext(inventory, _root.Backend.GetFirewall, _root.Now, _root.Backend.ReadQubeFile);
        foreach (var qube in new[] { "sys-net", "sys-firewall", "work" })
            Assert.DoesNotContain(FirewallAudit.Audit(context, inventory.Get(qube)), f => f.Check == Agent.AgentAuditCheck.AgentKeysStale);
    }

    [Fact]
    public void A_file_that_cannot_be_read_is_reported_and_the_other_qubes_are_still_checked()
    {
        Add(Web);
        WriteEarlierVersionBlocks("sys-net", "work");
        var findings = Audit("work", (qube, path) => qube == "sys-net"
            ? throw new QubesFirewallException("QubeNotRunning", FailureKind.ResourceUnavailable, "'sys-net' is not running.", qube)
            : _root.Backend.ReadQubeFile(qube, path));
        Assert.Equal([AuditChecks.CheckFailed, ForwardAuditChecks.UndeclaredPart], findings.Select(f => f.Check).OrderBy(c => c, StringComparer.Ordinal));
        Assert.Contains("could not be checked: 'sys-net' is not running.", findings.Single(f => f.Check == AuditChecks.CheckFailed).Message);
        Assert.StartsWith("work:/rw/config/rc.local holds port forward rules", findings.Single(f => f.Check == ForwardAuditChecks.UndeclaredPart).Message);
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
