using QubesFirewall.Engine.Agent;
using QubesFirewall.Engine.Deployment;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.Engine.Tests;

/// <summary>
/// Several forwards added as one change (a pipeline of Add-QubePortForward): each declaration set, each qube's agent keys
/// written once with one new generation, the whole change rolled back as one.
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class PortForwardBatchTests : IDisposable
{
    private static readonly string[] OnTheWay = ["sys-net", "sys-firewall", "work"];
    private readonly TempRoot _root = new();
    private readonly TempRoot _oneByOne = new();

    public PortForwardBatchTests()
    {
        foreach (var root in new[] { _root, _oneByOne })
            foreach (var qube in OnTheWay.Append("personal"))
                root.Backend.SetFeature(qube, AgentScript.VersionFeature, AgentScript.Version);
    }

    public void Dispose()
    {
        _root.Dispose();
        _oneByOne.Dispose();
    }

    private DeploymentOptions Options => DeploymentOptions.For(_root.Backend, _root.Now);

    private static List<PortForward> Forwards(int count, int first = 20001) =>
        Enumerable.Range(first, count).Select(p => PortForward.Create("work", ForwardProtocol.Tcp, p, allowFrom: ["192.0.2.0/24"])).ToList();

    private static Dictionary<string, string> Features(TempRoot root, string qube) =>
        root.Backend.GetInventory().Get(qube).Features.Where(f => f.Key.StartsWith("qubesfirewall.forward.", StringComparison.Ordinal) || AgentFeatures.IsAgentFeature(f.Key))
            .ToDictionary(f => f.Key, f => f.Value);

    private static void AssertKeysMatchDeclarations(TempRoot root)
    {
        var inventory = root.Backend.GetInventory();
        Assert.Empty(AgentFeatures.Changes(inventory, AgentFeatures.DeriveAll(inventory)));
    }

    [Fact]
    public void Ten_forwards_are_ten_declarations_and_each_qubes_keys_once_and_end_as_ten_single_adds_do()
    {
        // a forward of another qube through the same hops first: its parts on the hops are kept, sealed again with the new gen
        var other = PortForward.Create("personal", ForwardProtocol.Tcp, 8080, allowFrom: ["192.0.2.0/24"]);
        foreach (var root in new[] { _root, _oneByOne })
            Assert.Null(PortForwardPlanner.Apply(root.Backend, PortForwardPlanner.PlanAdd(root.Backend, other, DeploymentOptions.For(root.Backend, root.Now))).Failure);

        var plan = PortForwardPlanner.PlanAdd(_root.Backend, Forwards(10), Options);
        Assert.Equal(PlanOperation.Add, plan.Operation);
        Assert.Equal(10, plan.Members.Count);
        Assert.All(plan.Members, m => Assert.Equal(["sys-net", "sys-firewall"], m.Hops));
        Assert.All(plan.Steps, s => Assert.Equal(DeploymentStepKind.SetFeature, s.Kind));
        // no feature is set twice: 10 declarations; work's 10 parts and gen; on each hop 10 parts, personal's part again, and gen
        Assert.Equal(plan.Steps.Count, plan.Steps.Select(s => (s.VMName, s.FeatureName)).Distinct().Count());
        Assert.Equal(10, plan.Steps.Count(s => s.FeatureName!.StartsWith("qubesfirewall.forward.", StringComparison.Ordinal)));
        Assert.Equal(10 + 11 + 12 + 12, plan.Steps.Count);
        Assert.Equal(10, plan.Steps.TakeWhile(s => s.FeatureName!.StartsWith("qubesfirewall.forward.", StringComparison.Ordinal)).Count()); // the declarations first
        foreach (var qube in OnTheWay)
        {
            var mine = plan.Steps.Where(s => s.VMName == qube && AgentFeatures.IsAgentFeature(s.FeatureName!)).ToList();
            Assert.Equal(AgentFeatures.GenFeature, mine[^1].FeatureName); // gen last
            Assert.Single(mine, s => s.FeatureName == AgentFeatures.GenFeature);
            // every data key carries the one generation the agent reads
            Assert.All(mine.SkipLast(1), s => Assert.Contains($" gen={plan.AgentGenerations[qube]} ", s.FeatureValue));
            Assert.Equal(qube == "work" ? 10 : 11, plan.ForwardCounts[qube]);
        }
        Assert.Null(PortForwardPlanner.Apply(_root.Backend, plan).Failure);
        AssertKeysMatchDeclarations(_root);

        // the same features, byte for byte, as ten single Adds leave
        foreach (var forward in Forwards(10))
            Assert.Null(PortForwardPlanner.Apply(_oneByOne.Backend, PortForwardPlanner.PlanAdd(_oneByOne.Backend, forward, DeploymentOptions.For(_oneByOne.Backend, _oneByOne.Now))).Failure);
        foreach (var qube in OnTheWay.Append("personal"))
            Assert.Equal(Features(_oneByOne, qube).OrderBy(f => f.Key), Features(_root, qube).OrderBy(f => f.Key));

        // the same change again: nothing to set
        var again = PortForwardPlanner.PlanAdd(_root.Backend, Forwards(10), Options);
        Assert.Equal(PlanOperation.Reapply, again.Operation);
        Assert.Empty(again.Steps);
        // one forward of the ten given again, another changed: that declaration and each qube's keys once more
        var changed = Forwards(10);
        changed[3] = PortForward.Create("work", ForwardProtocol.Tcp, 20004, allowFrom: ["198.51.100.0/24"]);
        var update = PortForwardPlanner.PlanAdd(_root.Backend, changed, Options);
        Assert.Equal([PlanOperation.Reapply, PlanOperation.Reapply, PlanOperation.Reapply, PlanOperation.Update], update.Members.Take(4).Select(m => m.Operation));
        Assert.Equal(["qubesfirewall.forward.tcp.20004"], update.Steps.Where(s => s.FeatureName!.StartsWith("qubesfirewall.", StringComparison.Ordinal)).Select(s => s.FeatureName));
        Assert.Equal(update.Steps.Count, update.Steps.Select(s => (s.VMName, s.FeatureName)).Distinct().Count());
    }

    [Fact]
    public void Removing_forwards_as_one_change_writes_each_qubes_keys_once_then_the_declarations_and_ends_as_single_removes_do()
    {
        var other = PortForward.Create("personal", ForwardProtocol.Tcp, 8080, allowFrom: ["192.0.2.0/24"]);
        foreach (var root in new[] { _root, _oneByOne })
        {
            var options = DeploymentOptions.For(root.Backend, root.Now);
            Assert.Null(PortForwardPlanner.Apply(root.Backend, PortForwardPlanner.PlanAdd(root.Backend, Forwards(10).Append(other).ToList(), options)).Failure);
        }
        var gone = Enumerable.Range(20001, 6).Select(p => ("work", ForwardProtocol.Tcp, p)).ToList();
        var plan = PortForwardPlanner.PlanRemove(_root.Backend, gone.Append(gone[0]).ToList(), Options); // one named twice: removed once
        Assert.Equal(PlanOperation.Remove, plan.Operation);
        Assert.Equal(6, plan.Members.Count);
        Assert.Equal(plan.Steps.Count, plan.Steps.Select(s => (s.VMName, s.FeatureName)).Distinct().Count());
        // work: its 6 parts removed, its 4 others and gen again; each hop: 6 removed, 5 again (personal's too) and gen; then the 6 declarations
        Assert.Equal(6 + 4 + 1 + 2 * (6 + 5 + 1) + 6, plan.Steps.Count);
        Assert.All(plan.Steps.TakeLast(6), s => Assert.Equal((DeploymentStepKind.RemoveFeature, "work"), (s.Kind, s.VMName)));
        Assert.All(plan.Steps.TakeLast(6), s => Assert.StartsWith("qubesfirewall.forward.tcp.2000", s.FeatureName, StringComparison.Ordinal));
        Assert.Equal(3, plan.Steps.Count(s => s.FeatureName == AgentFeatures.GenFeature));
        Assert.Null(PortForwardPlanner.Apply(_root.Backend, plan).Failure);
        AssertKeysMatchDeclarations(_root);

        foreach (var (vm, protocol, port) in gone)
            Assert.Null(PortForwardPlanner.Apply(_oneByOne.Backend, PortForwardPlanner.PlanRemove(_oneByOne.Backend, vm, protocol, port, DeploymentOptions.For(_oneByOne.Backend, _oneByOne.Now))).Failure);
        foreach (var qube in OnTheWay.Append("personal"))
            Assert.Equal(Features(_oneByOne, qube).OrderBy(f => f.Key), Features(_root, qube).OrderBy(f => f.Key));
        Assert.Equal("PortForwardNotFound", Assert.Throws<QubesFirewallException>(() => PortForwardPlanner.CheckRemove(_root.Backend.GetInventory(), "work", ForwardProtocol.Tcp, 20001)).ErrorId);
    }

    [Fact]
    public void A_failure_at_the_last_step_puts_the_whole_change_back()
    {
        var before = OnTheWay.ToDictionary(q => q, q => Features(_root, q));
        var plan = PortForwardPlanner.PlanAdd(_root.Backend, Forwards(5), Options);
        Assert.Equal(("work", AgentFeatures.GenFeature), (plan.Steps[^1].VMName, plan.Steps[^1].FeatureName)); // work's gen, after every other step
        var faulty = new RefusingBackend(_root.Backend, "work", AgentFeatures.GenFeature);
        var result = PortForwardPlanner.Apply(faulty, plan);

        Assert.Equal("PortForwardRolledBack", result.Failure!.ErrorId);
        Assert.Contains("5 port forwards", result.Failure.Message);
        Assert.Equal(Enumerable.Repeat(DeploymentStepStatus.RolledBack, plan.Steps.Count - 1).Append(DeploymentStepStatus.Failed), result.Rollout!.Steps.Select(s => s.Status));
        foreach (var qube in OnTheWay) Assert.Equal(before[qube], Features(_root, qube));
        Assert.Empty(PortForwardPlanner.List(_root.Backend.GetInventory(), _root.Now));
    }

    /// <summary>qubesd refusing one feature of one qube.</summary>
    private sealed class RefusingBackend(Backends.IQubesBackend inner, string vmName, string feature) : Tests.Deployment.DelegatingBackend(inner)
    {
        public override void SetFeature(string vm, string name, string value)
        {
            if (vm == vmName && name == feature)
                throw new QubesFirewallException("QubesdRefused", FailureKind.InvalidOperation, $"qubesd refused the feature {name} of '{vm}'.", vm);
            base.SetFeature(vm, name, value);
        }
    }

    [Fact]
    public void A_forward_given_again_replaces_the_earlier_and_one_port_through_a_hop_twice_is_refused()
    {
        var twice = Forwards(2);
        twice.Add(PortForward.Create("work", ForwardProtocol.Tcp, 20001, allowFrom: ["198.51.100.0/24"]));
        var plan = PortForwardPlanner.PlanAdd(_root.Backend, twice, Options);
        Assert.Equal(["tcp/20002 -> work:20002", "tcp/20001 -> work:20001"], plan.Members.Select(m => m.Forward!.Text));
        var declaration = Assert.Single(plan.Steps, s => s.FeatureName == "qubesfirewall.forward.tcp.20001");
        Assert.Contains("allow=198.51.100.0/24", declaration.FeatureValue);

        // personal's tcp/20001 through the same hops as work's, earlier in the same change
        var inventory = _root.Backend.GetInventory();
        var first = PortForwardPlanner.Check(inventory, Forwards(1)[0], Options, []);
        var clash = PortForward.Create("personal", ForwardProtocol.Tcp, 20001, allowFrom: ["192.0.2.0/24"]);
        var ex = Assert.Throws<QubesFirewallException>(() => PortForwardPlanner.Check(inventory, clash, Options, [first]));
        Assert.Equal("PortAlreadyForwarded", ex.ErrorId);
        Assert.Contains("tcp/20001 is forwarded to 'work' through sys-net, sys-firewall by tcp/20001 -> work:20001, given earlier in the same change", ex.Message);
        Assert.Equal("PortAlreadyForwarded", Assert.Throws<QubesFirewallException>(() => PortForwardPlanner.PlanAdd(_root.Backend, [Forwards(1)[0], clash], Options)).ErrorId);
        // another port of personal's is fine alongside
        Assert.Equal(2, PortForwardPlanner.PlanAdd(_root.Backend, [Forwards(1)[0], PortForward.Create("personal", ForwardProtocol.Tcp, 20002, allowFrom: ["192.0.2.0/24"])], Options).Members.Count);
    }
}
