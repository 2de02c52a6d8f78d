using QubesFirewall.Engine.Configuration;
using QubesFirewall.Engine.Deployment;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.Engine.Tests.Configuration;

/// <summary>The configuration planner on a small root: sys-net → sys-firewall → personal, work, untrusted, sys-vpn → vpn-app; vault without network.</summary>
public sealed class ConfigurationPlannerTests : IDisposable
{
    private readonly TempRoot _root = new(QubesXmlBuilder.Standard().Build("sys-firewall"));

    public void Dispose() => _root.Dispose();

    private ConfigurationPlan Plan(string qubes, bool prune = false) =>
        ConfigurationPlanner.Plan(SystemReader.For(_root.Backend), ConfigurationReader.Read("@{ Version = 1; Qubes = @{ " + qubes + " } }", ConfigurationFormat.Psd1),
            prune, DeploymentOptions.For(_root.Backend, _root.Now));

    [Fact]
    public void Network_qubes_move_before_the_qubes_that_move_behind_them()
    {
        var plan = Plan("'work' = @{ NetVM = 'sys-vpn' }; 'sys-vpn' = @{ NetVM = 'sys-net' }");
        Assert.Equal(["sys-vpn: set netvm to sys-net (was sys-firewall): qvm-prefs sys-vpn netvm sys-net", "work: set netvm to sys-vpn (was sys-firewall): qvm-prefs work netvm sys-vpn"],
            plan.Steps.Select(s => s.Description));
        Assert.All(plan.Steps, s => Assert.Equal(DeploymentStepKind.SetProperty, s.Kind));
        Assert.Empty(plan.SensitiveMoves);
    }

    [Fact]
    public void Leaving_a_VPN_qube_is_a_move_of_its_own_and_a_plain_network_qube_is_not()
    {
        Assert.Empty(Plan("'vpn-app' = @{ NetVM = 'sys-firewall' }").SensitiveMoves);
        _root.Backend.SetFeature("sys-vpn", "service.vpn-handler-openvpn", "1");
        var move = Assert.Single(Plan("'vpn-app' = @{ NetVM = 'sys-firewall' }").SensitiveMoves);
        Assert.Equal(("vpn-app", "sys-vpn", "sys-firewall"), (move.VMName, move.From, move.To));
        Assert.Contains("leaves the VPN qube 'sys-vpn'", move.Reason);
        // staying behind it (another netvm further down the same chain) is no move away from it
        Assert.DoesNotContain(Plan("'vpn-app' = @{ NetVM = '(default)' }; 'sys-firewall' = @{ NetVM = 'sys-net' }").SensitiveMoves, m => m.VMName == "sys-firewall");
    }

    [Fact]
    public void The_forwards_a_file_adds_are_one_change_that_writes_each_qubes_keys_once()
    {
        foreach (var qube in new[] { "sys-net", "sys-firewall", "work" }) _root.Backend.SetFeature(qube, Agent.AgentScript.VersionFeature, Agent.AgentScript.Version);
        var plan = Plan("'work' = @{ Forwards = @(" + string.Join(", ", Enumerable.Range(20001, 3).Select(p => $"@{{ Protocol = 'tcp'; Port = {p}; AllowFrom = '192.0.2.0/24' }}")) + ") }");
        Assert.Equal(plan.Steps.Count, plan.Steps.Select(s => (s.VMName, s.FeatureName)).Distinct().Count());
        // 3 declarations, then on work, sys-firewall and sys-net 3 parts and gen each (as three changes: 7 + 10 + 13 Sets)
        Assert.Equal(3 + 3 * 4, plan.Steps.Count);
        Assert.Equal(["sys-firewall", "sys-net", "work"], plan.Steps.Where(s => s.FeatureName == Agent.AgentFeatures.GenFeature).Select(s => s.VMName).Order());
        Assert.True(Rollout.Run(_root.Backend, plan.Steps).Succeeded);
        var inventory = _root.Backend.GetInventory();
        Assert.Empty(Agent.AgentFeatures.Changes(inventory, Agent.AgentFeatures.DeriveAll(inventory)));
    }

    [Fact]
    public void Refusals_come_before_any_step()
    {
        Assert.Equal("QubeNotFound", Assert.Throws<QubesFirewallException>(() => Plan("'nope' = @{ NetVM = 'sys-net' }")).ErrorId);
        Assert.Equal("NotANetVm", Assert.Throws<QubesFirewallException>(() => Plan("'work' = @{ NetVM = 'vault' }")).ErrorId);
        Assert.Equal("NetVmNotFound", Assert.Throws<QubesFirewallException>(() => Plan("'work' = @{ NetVM = 'sys-nope' }")).ErrorId);
        Assert.Equal("NetVmLoop", Assert.Throws<QubesFirewallException>(() => Plan("'sys-firewall' = @{ NetVM = 'sys-vpn' }")).ErrorId);
    }

    [Fact]
    public void A_rule_list_becomes_the_files_with_the_smallest_edit_and_its_inverse_restores_it()
    {
        _root.Backend.ApplyFirewallEdit("work", FirewallEdit.Insert([new RuleInsertion(Model.RuleText.Parse("action=accept proto=tcp dstports=22"), 1), new RuleInsertion(Model.RuleText.Parse("action=drop"), 2)]), _root.Backend.GetFirewall("work"));
        // now: accept, accept tcp/22, drop → wanted: accept tcp/22, accept udp/53, drop
        var plan = Plan("'work' = @{ Rules = @('action=accept proto=tcp dstports=22-22', 'action=accept proto=udp dstports=53-53', 'action=drop') }");
        var step = Assert.Single(plan.Steps);
        Assert.Equal("work: set the Qubes firewall: remove 1 rule(s), add 1 (3 rules after)", step.Description);
        Assert.Equal("- #0 action=accept\n+ #1 action=accept proto=udp dstports=53-53\n", step.Detail);
        var result = Rollout.Run(_root.Backend, plan.Steps);
        Assert.True(result.Succeeded);
        Assert.Equal(["action=accept proto=tcp dstports=22-22", "action=accept proto=udp dstports=53-53", "action=drop"], _root.Backend.GetFirewall("work").Rules.Select(r => r.Text));
        _root.Backend.ApplyFirewallEdit("work", step.Firewall!.Inverse(), _root.Backend.GetFirewall("work"));
        Assert.Equal(["action=accept", "action=accept proto=tcp dstports=22-22", "action=drop"], _root.Backend.GetFirewall("work").Rules.Select(r => r.Text));
    }

    [Fact]
    public void A_link_in_the_file_brings_its_accept_rule_and_the_plan_changes_nothing_twice()
    {
        const string file = "'work' = @{ Rules = @('action=drop'); Links = @( @{ To = 'personal'; Protocol = 'tcp'; Port = 5432 } ) }";
        var plan = Plan(file);
        Assert.Contains(plan.Steps, s => s.Kind == DeploymentStepKind.SetFeature && s.FeatureName == "qubesfirewall.link.personal.tcp.5432");
        Assert.True(Rollout.Run(_root.Backend, plan.Steps).Succeeded);
        Assert.Equal(["action=accept dst4=10.137.0.10/32 proto=tcp dstports=5432-5432 comment=qubesfirewall link to personal", "action=drop"],
            _root.Backend.GetFirewall("work").Rules.Select(r => r.Text));
        Assert.Empty(Plan(file).Steps);
        Assert.Empty(Plan(file).Drift);
    }
}
