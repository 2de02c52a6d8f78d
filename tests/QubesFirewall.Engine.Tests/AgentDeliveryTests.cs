using QubesFirewall.Engine.Agent;
using QubesFirewall.Engine.Deployment;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.Engine.Tests;

/// <summary>Port forwards delivered through the agent: only feature calls in dom0, nothing written into or run in a qube.</summary>
public sealed class AgentDeliveryTests : IDisposable
{
    private readonly TempRoot _root = new();

    public AgentDeliveryTests()
    {
        foreach (var qube in new[] { "sys-net", "sys-firewall", "work" })
            _root.Backend.SetFeature(qube, AgentScript.VersionFeature, AgentScript.Version);
    }

    public void Dispose() => _root.Dispose();

    private DeploymentOptions Options => DeploymentOptions.For(_root.Backend, _root.Now);

    private static PortForward Web => PortForward.Create("work", ForwardProtocol.Tcp, 443, 8443, allowFrom: ["192.168.1.0/24"]);

    private Dictionary<string, string> AgentKeys(string qube) =>
        _root.Backend.GetInventory().Get(qube).Features.Where(f => AgentFeatures.IsAgentFeature(f.Key)).ToDictionary(f => f.Key, f => f.Value);

    [Fact]
    public void Adding_through_a_disposable_sys_firewall_is_only_feature_calls_without_Force_and_removing_takes_every_key_back()
    {
        Assert.Equal("DispVM", _root.Backend.GetInventory().Get("sys-firewall").ClassName);
        var plan = PortForwardPlanner.PlanAdd(_root.Backend, Web, Options); // no -Force: nothing goes into default-dvm
        Assert.True(plan.ViaAgent);
        Assert.All(plan.Steps, s => Assert.True(s.Kind is DeploymentStepKind.SetFeature, s.Description));
        Assert.Equal(("work", "qubesfirewall.forward.tcp.443"), (plan.Steps[0].VMName, plan.Steps[0].FeatureName));
        Assert.Equal(7, plan.Steps.Count); // the declaration, then a data key and gen for each of the three qubes
        foreach (var qube in new[] { "sys-net", "sys-firewall", "work" })
        {
            var mine = plan.Steps.Where(s => s.VMName == qube && s.FeatureName!.StartsWith(AgentFeatures.Prefix, StringComparison.Ordinal)).ToList();
            Assert.Equal(AgentFeatures.GenFeature, mine[^1].FeatureName);
            Assert.Matches("^[0-9a-f]{16}$", plan.AgentGenerations[qube]);
        }
        Assert.DoesNotContain(plan.Warnings, w => w.Contains("QubeFirewallAgentMissing", StringComparison.Ordinal));

        var result = PortForwardPlanner.Apply(_root.Backend, plan);
        Assert.Null(result.Failure);
        Assert.Equal(["sys-firewall", "sys-net", "work"], result.Hops.Select(h => h.VMName));
        Assert.All(result.Hops, h => Assert.Equal(PortForwardHopStatus.Recorded, h.Status));
        Assert.Null(_root.Backend.ReadQubeFile("default-dvm", "/rw/config/qubes-firewall-user-script"));
        Assert.Null(_root.Backend.ReadQubeFile("sys-net", "/rw/config/qubes-firewall-user-script"));
        var fw = AgentKeys("sys-firewall");
        Assert.Equal(2, fw.Count);
        Assert.Contains(fw.Values, v => v.StartsWith("for=sys-firewall gen=", StringComparison.Ordinal) && v.Contains(" nat=10.137.0.11 ", StringComparison.Ordinal) && v.EndsWith(" vm=work", StringComparison.Ordinal));

        // the same again sets nothing
        var again = PortForwardPlanner.PlanAdd(_root.Backend, Web, Options);
        Assert.Equal(PlanOperation.Reapply, again.Operation);
        Assert.Empty(again.Steps);

        var remove = PortForwardPlanner.PlanRemove(_root.Backend, "work", ForwardProtocol.Tcp, 443, Options);
        Assert.True(remove.ViaAgent);
        Assert.Equal("qubesfirewall.forward.tcp.443", remove.Steps[^1].FeatureName); // the declaration goes last
        Assert.All(remove.Steps, s => Assert.Equal(DeploymentStepKind.RemoveFeature, s.Kind));
        Assert.All(remove.AgentGenerations.Values, g => Assert.Equal("none", g));
        Assert.Null(PortForwardPlanner.Apply(_root.Backend, remove).Failure);
        foreach (var qube in new[] { "sys-net", "sys-firewall", "work" }) Assert.Empty(AgentKeys(qube));
        Assert.DoesNotContain("qubesfirewall.forward.tcp.443", _root.Backend.GetInventory().Get("work").Features.Keys);
    }

    [Fact]
    public void A_qube_without_the_agent_is_refused_by_name_with_the_install_command()
    {
        _root.Backend.RemoveFeature("sys-net", AgentScript.VersionFeature);
        var ex = Assert.Throws<QubesFirewallException>(() => PortForwardPlanner.PlanAdd(_root.Backend, Web, Options));
        Assert.Equal("QubeFirewallAgentMissing", ex.ErrorId);
        Assert.Contains("sys-net has none. Install it once: Install-QubeFirewallAgent -VMName sys-net. ", ex.Message);
        Assert.Equal("sys-net", ex.Target);
        Assert.DoesNotContain("qubesfirewall.forward.tcp.443", _root.Backend.GetInventory().Get("work").Features.Keys);
        foreach (var qube in new[] { "sys-net", "sys-firewall", "work" }) Assert.Empty(AgentKeys(qube));
        Assert.Null(_root.Backend.ReadQubeFile("sys-net", "/rw/config/qubes-firewall-user-script"));
    }

    [Fact]
    public void Agent_status_lines_are_read_with_a_strict_grammar()
    {
        var ok = AgentStatus.Parse($"state=applied gen=0123456789abcdef applied=0123456789abcdef version={AgentScript.Version} msg=3 keys\n");
        Assert.Equal(("applied", "0123456789abcdef"), (ok!.State, ok.Generation));
        Assert.Null(AgentStatus.Parse("state=applied gen=0123456789abcdef applied=0123456789abcdef version=x msg=")); // bad version
        Assert.Null(AgentStatus.Parse($"state=applied gen=0123456789abcdef applied=none version={AgentScript.Version} msg=a\u001b[31m")); // escape
        Assert.Null(AgentStatus.Parse($"state=done gen=none applied=none version={AgentScript.Version} msg="));
        Assert.Null(AgentStatus.Parse($"state=applied gen=none applied=none version={AgentScript.Version} msg=\nsecond line"));
        Assert.Null(AgentStatus.Parse(new string('a', 10_000)));
    }

    [Fact]
    public void Undo_puts_every_feature_back_in_reverse_order()
    {
        var steps = new[]
        {
            DeploymentStep.SetFeature("work", "a", "1", null)!,
            DeploymentStep.SetFeature("work", "b", "2", "old")!,
            DeploymentStep.RemoveFeature("work", "c", "3"),
        };
        var undo = AgentDelivery.Undo(steps);
        Assert.Equal([("c", DeploymentStepKind.SetFeature, "3"), ("b", DeploymentStepKind.SetFeature, "old"), ("a", DeploymentStepKind.RemoveFeature, null)],
            undo.Select(s => (s.FeatureName!, s.Kind, s.FeatureValue)));
    }

    private IReadOnlyList<AuditFinding> AgentFindings(string qube)
    {
        var inventory = _root.Backend.GetInventory();
        return FirewallAudit.Audit(new AuditContext(inventory, _root.Backend.GetFirewall, _root.Now), inventory.Get(qube))
            .Where(f => f.Check is AgentAuditCheck.AgentKeysStale or AgentAuditCheck.AgentMissing).ToList();
    }

    [Fact]
    public void Test_QubeFirewall_finds_stale_and_stray_agent_keys_from_dom0_facts()
    {
        Assert.Null(PortForwardPlanner.Apply(_root.Backend, PortForwardPlanner.PlanAdd(_root.Backend, Web, Options)).Failure);
        foreach (var qube in new[] { "sys-net", "sys-firewall", "work" }) Assert.Empty(AgentFindings(qube));

        // work's address changed by qvm-prefs: sys-firewall translates to the old one, work accepts on the old one
        _root.Backend.SetProperty("work", "ip", "10.137.0.99");
        var stale = Assert.Single(AgentFindings("sys-firewall"));
        Assert.Equal((AuditSeverity.Error, AgentAuditCheck.AgentKeysStale), (stale.Severity, stale.Check));
        Assert.Contains("1 key(s) missing or different", stale.Message, StringComparison.Ordinal);
        Assert.Single(AgentFindings("work"));
        Assert.Empty(AgentFindings("sys-net")); // sys-net translates to sys-firewall's address, which did not change
        _root.Backend.ResetProperty("work", "ip");
        Assert.Empty(AgentFindings("sys-firewall"));

        // a stray key, and keys on a qube without the agent
        _root.Backend.SetFeature("sys-net", "vm-config.qubesfw.hop4.09999.tcp.0000000000", "for=sys-net gen=0 proto=tcp");
        Assert.Contains("1 stray key(s)", Assert.Single(AgentFindings("sys-net")).Message, StringComparison.Ordinal);
        _root.Backend.RemoveFeature("work", AgentScript.VersionFeature);
        var missing = Assert.Single(AgentFindings("work"));
        Assert.Equal((AuditSeverity.Warning, "Install-QubeFirewallAgent -VMName work"), (missing.Severity, missing.Fix));
    }

    [Fact]
    public void A_link_through_the_agent_is_features_and_the_sources_firewall_edit_only()
    {
        _root.Backend.SetFeature("personal", AgentScript.VersionFeature, AgentScript.Version);
        var link = InterVmLink.Create("work", "personal", ForwardProtocol.Tcp, new LinkPorts(5432, 5432));
        var plan = InterVmLinkPlanner.PlanEnable(_root.Backend, [link], Options);
        Assert.True(plan.ViaAgent);
        Assert.Equal(["SetFeature work", "SetFeature personal", "SetFeature personal", "SetFeature sys-firewall", "SetFeature sys-firewall", "EditFirewall work"],
            plan.Steps.Select(s => $"{s.Kind} {s.VMName}"));
        Assert.Null(InterVmLinkPlanner.Apply(_root.Backend, plan).Failure);
        Assert.Single(AgentKeys("sys-firewall"), k => k.Key.StartsWith("vm-config.qubesfw.lnet4.", StringComparison.Ordinal));
        Assert.Null(_root.Backend.ReadQubeFile("default-dvm", "/rw/config/qubes-firewall-user-script"));

        var disable = InterVmLinkPlanner.PlanDisable(_root.Backend, [link], Options);
        Assert.True(disable.ViaAgent);
        Assert.Equal("EditFirewall", disable.Steps[0].Kind.ToString());
        Assert.Equal((DeploymentStepKind.RemoveFeature, link.FeatureName), (disable.Steps[^1].Kind, disable.Steps[^1].FeatureName));
        Assert.Null(InterVmLinkPlanner.Apply(_root.Backend, disable).Failure);
        Assert.Empty(AgentKeys("sys-firewall"));
        Assert.Empty(AgentKeys("personal"));
    }
}
