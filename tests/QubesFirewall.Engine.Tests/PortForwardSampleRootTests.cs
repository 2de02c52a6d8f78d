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

    private DeploymentOptions Options(bool force = false) => DeploymentOptions.For(_root.Backend, _root.Now, force);

    [Fact]
    public void A_disposable_hop_is_refused_without_force_naming_its_template()
    {
        var before = Directory.EnumerateFiles(_root.Path, "*", SearchOption.AllDirectories).ToDictionary(f => f, File.ReadAllText);
        var ex = Assert.Throws<QubesFirewallException>(() =>
            PortForwardPlanner.PlanAdd(_root.Backend, PortForward.Create("work", ForwardProtocol.Tcp, 443, allowFrom: ["192.168.1.0/24"]), Options()));
        Assert.Equal("DisposableHop", ex.ErrorId);
        Assert.Contains("'sys-firewall' (on the way) is a disposable of 'default-dvm'", ex.Message);
        Assert.Contains("-Force", ex.Message);
        Assert.Contains("No other disposable of default-dvm exists now", ex.Message);
        Assert.Equal(before, Directory.EnumerateFiles(_root.Path, "*", SearchOption.AllDirectories).ToDictionary(f => f, File.ReadAllText));
    }

    [Fact]
    public void With_force_the_block_goes_into_the_disposable_template_guarded_by_name_and_runs_in_the_disposable()
    {
        var plan = PortForwardPlanner.PlanAdd(_root.Backend, PortForward.Create("work", ForwardProtocol.Tcp, 443, allowFrom: ["192.168.1.0/24"]), Options(force: true));
        Assert.Contains(plan.Warnings, w => w.Contains("disposable of 'default-dvm'", StringComparison.Ordinal));
        var write = plan.Steps.Single(s => s.Kind == DeploymentStepKind.WriteFile && s.ForQube == "sys-firewall");
        Assert.Equal(("default-dvm", ForwardPersistence.FirewallUserScript), (write.VMName, write.Path!));
        Assert.Contains("default-dvm: write /rw/config/qubes-firewall-user-script for sys-firewall (a disposable of default-dvm)", write.Description);
        var run = plan.Steps.Single(s => s.Kind == DeploymentStepKind.RunScript && s.ForQube == "sys-firewall");
        Assert.Equal("sys-firewall", run.VMName);
        Assert.DoesNotContain("qubesdb-read", run.Script); // run in the disposable itself: no guard needed
        Assert.Contains("dnat to 10.137.0.11", run.Script);

        Assert.Null(PortForwardPlanner.Apply(_root.Backend, plan).Failure);
        var file = _root.Backend.ReadQubeFile("default-dvm", ForwardPersistence.FirewallUserScript)!;
        Assert.Contains("if [ \"$(qubesdb-read /name 2>/dev/null)\" = 'sys-firewall' ]; then", file);
        Assert.Null(_root.Backend.ReadQubeFile("sys-firewall", ForwardPersistence.FirewallUserScript));
        var export = PortForwardPlanner.Export(_root.Backend.GetInventory(), "sys-firewall")!;
        Assert.Equal("default-dvm", export.StoredIn);
        Assert.Equal(ManagedBlock.Extract(file), export.Script);

        // removing needs no -Force and empties the template's block again
        var remove = PortForwardPlanner.PlanRemove(_root.Backend, "work", ForwardProtocol.Tcp, 443, Options());
        Assert.Null(PortForwardPlanner.Apply(_root.Backend, remove).Failure);
        Assert.Equal("#!/bin/sh\n", _root.Backend.ReadQubeFile("default-dvm", ForwardPersistence.FirewallUserScript));
    }

    [Fact]
    public void An_internal_forward_says_which_clients_their_own_firewall_keeps_out()
    {
        // the sample's work ends with drop, personal's old-format list has policy deny; sys-whonix has the default (accept)
        var plan = PortForwardPlanner.PlanAdd(_root.Backend, PortForward.Create("untrusted", ForwardProtocol.Tcp, 8080, type: ForwardType.Internal), Options(force: true));
        Assert.Equal(["sys-firewall"], plan.Hops);
        var work = Assert.Single(plan.Warnings, w => w.StartsWith("'work' cannot use", StringComparison.Ordinal));
        Assert.Contains("10.137.0.12 tcp port 8080", work);
        Assert.Contains("drops it", work);
        Assert.Contains("Add-QubeFirewallRule -VMName work -Action Accept -Protocol Tcp -DstHost 10.137.0.12 -DstPorts 8080", work);
        Assert.Contains(plan.Warnings, w => w.StartsWith("'personal' cannot use", StringComparison.Ordinal) && w.Contains("no rule of its list matches", StringComparison.Ordinal));
        Assert.DoesNotContain(plan.Warnings, w => w.StartsWith("'untrusted'", StringComparison.Ordinal) || w.StartsWith("'sys-whonix'", StringComparison.Ordinal));

        // only the sources -AllowFrom names are checked
        var limited = PortForwardPlanner.PlanAdd(_root.Backend, PortForward.Create("untrusted", ForwardProtocol.Tcp, 8080, type: ForwardType.Internal, allowFrom: ["10.137.0.14"]), Options(force: true));
        Assert.DoesNotContain(limited.Warnings, w => w.Contains("cannot use", StringComparison.Ordinal));
    }

    [Fact]
    public void Whonix_qubes_are_refused()
    {
        var ex = Assert.Throws<QubesFirewallException>(() =>
            PortForwardPlanner.PlanAdd(_root.Backend, PortForward.Create("anon-whonix", ForwardProtocol.Tcp, 80), Options(force: true)));
        Assert.Equal("WhonixInChain", ex.ErrorId);
    }
}
