using QubesFirewall.Engine.Deployment;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Persistence;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.Engine.Tests;

/// <summary>On the sample root, whose sys-firewall is a disposable of default-dvm as on a default R4.2 install.</summary>
public sealed class PortForwardSampleRootTests : IDisposable
{
    private readonly TempRoot _root = new();

    public void Dispose() => _root.Dispose();

    private DeploymentOptions Options() => DeploymentOptions.For(_root.Backend, _root.Now);

    [Fact]
    public void The_sample_records_the_agent_this_module_ships_on_the_qubes_its_forwards_and_links_reach()
    {
        // as Install-QubeFirewallAgent leaves them: a changed agent script changes its version, and the sample must follow
        var inventory = _root.Backend.GetInventory();
        foreach (var qube in new[] { "sys-net", "sys-firewall", "work", "personal", "untrusted" })
            Assert.Equal(Agent.AgentScript.Version, inventory.Get(qube).Features.GetValueOrDefault(Agent.AgentScript.VersionFeature));
        Assert.DoesNotContain(inventory.Qubes, q => q.Features.ContainsKey(Agent.AgentScript.VersionFeature) && q.Name is "default-dvm" or "sys-whonix" or "vault");
    }

    // what stands in for the inside of the qubes (the deployment lock of the root aside)
    private Dictionary<string, string> QubeState() =>
        Directory.EnumerateFiles(Path.Combine(_root.Path, "qubesfirewall-state"), "*", SearchOption.AllDirectories)
            .Where(f => !Path.GetFileName(f).StartsWith(".deploy", StringComparison.Ordinal)).ToDictionary(f => f, File.ReadAllText);

    [Fact]
    public void A_forward_through_the_disposable_sys_firewall_needs_no_Force_and_writes_nothing_into_default_dvm()
    {
        var before = QubeState();
        var plan = PortForwardPlanner.PlanAdd(_root.Backend, PortForward.Create("work", ForwardProtocol.Tcp, 443, allowFrom: ["192.168.1.0/24"]), Options());
        Assert.True(plan.ViaAgent);
        Assert.All(plan.Steps, s => Assert.Equal(DeploymentStepKind.SetFeature, s.Kind));
        Assert.DoesNotContain(plan.Steps, s => s.VMName == "default-dvm");
        Assert.DoesNotContain(plan.Warnings, w => w.Contains("default-dvm", StringComparison.Ordinal));
        Assert.Null(PortForwardPlanner.Apply(_root.Backend, plan).Failure);
        Assert.Contains(_root.Backend.GetInventory().Get("sys-firewall").Features, f => f.Key.StartsWith(Agent.AgentFeatures.Prefix, StringComparison.Ordinal));
        // nothing inside any qube changed (the state folder stands in for the qubes): only features in qubes.xml
        Assert.Equal(before, QubeState());

        var remove = PortForwardPlanner.PlanRemove(_root.Backend, "work", ForwardProtocol.Tcp, 443, Options());
        Assert.Null(PortForwardPlanner.Apply(_root.Backend, remove).Failure);
        Assert.DoesNotContain(_root.Backend.GetInventory().Get("sys-firewall").Features, f => f.Key.StartsWith(Agent.AgentFeatures.Prefix, StringComparison.Ordinal));
        Assert.Equal(before, QubeState());
    }

    [Fact]
    public void Without_the_agent_on_the_way_a_forward_is_refused_naming_the_qubes_and_the_install_command_and_nothing_changes()
    {
        _root.Backend.RemoveFeature("sys-firewall", Agent.AgentScript.VersionFeature);
        _root.Backend.RemoveFeature("sys-net", Agent.AgentScript.VersionFeature);
        var before = Directory.EnumerateFiles(_root.Path, "*", SearchOption.AllDirectories).ToDictionary(f => f, File.ReadAllText);
        var ex = Assert.Throws<QubesFirewallException>(() =>
            PortForwardPlanner.PlanAdd(_root.Backend, PortForward.Create("work", ForwardProtocol.Tcp, 443, allowFrom: ["192.168.1.0/24"]), Options()));
        Assert.Equal("QubeFirewallAgentMissing", ex.ErrorId);
        Assert.Equal("tcp/443 -> work:443 needs the QubesFirewall agent in every qube on the way, and sys-net, sys-firewall have none. " +
            "Install it once: Install-QubeFirewallAgent -VMName sys-net, sys-firewall (sys-firewall's is kept in its disposable template default-dvm; asked once). " +
            "Then each change is feature calls in dom0 only. Nothing was changed.", ex.Message);
        Assert.Equal(before, Directory.EnumerateFiles(_root.Path, "*", SearchOption.AllDirectories).ToDictionary(f => f, File.ReadAllText));
    }

    [Fact]
    public void An_internal_forward_says_which_clients_their_own_firewall_keeps_out()
    {
        // the sample's work ends with drop, personal's old-format list has policy deny; sys-whonix has the default (accept)
        var plan = PortForwardPlanner.PlanAdd(_root.Backend, PortForward.Create("untrusted", ForwardProtocol.Tcp, 8080, type: ForwardType.Internal), Options());
        Assert.Equal(["sys-firewall"], plan.Hops);
        var work = Assert.Single(plan.Warnings, w => w.StartsWith("'work' cannot use", StringComparison.Ordinal));
        Assert.Contains("10.137.0.12 tcp port 8080", work);
        Assert.Contains("drops it", work);
        Assert.Contains("Add-QubeFirewallRule -VMName work -Action Accept -Protocol Tcp -DstHost 10.137.0.12 -DstPorts 8080", work);
        Assert.Contains(plan.Warnings, w => w.StartsWith("'personal' cannot use", StringComparison.Ordinal) && w.Contains("no rule of its list matches", StringComparison.Ordinal));
        Assert.DoesNotContain(plan.Warnings, w => w.StartsWith("'untrusted'", StringComparison.Ordinal) || w.StartsWith("'sys-whonix'", StringComparison.Ordinal));

        // only the sources -AllowFrom names are checked
        var limited = PortForwardPlanner.PlanAdd(_root.Backend, PortForward.Create("untrusted", ForwardProtocol.Tcp, 8080, type: ForwardType.Internal, allowFrom: ["10.137.0.14"]), Options());
        Assert.DoesNotContain(limited.Warnings, w => w.Contains("cannot use", StringComparison.Ordinal));
    }

    [Fact]
    public void Whonix_qubes_are_refused()
    {
        var ex = Assert.Throws<QubesFirewallException>(() =>
            PortForwardPlanner.PlanAdd(_root.Backend, PortForward.Create("anon-whonix", ForwardProtocol.Tcp, 80), Options()));
        Assert.Equal("WhonixInChain", ex.ErrorId);
    }
}
