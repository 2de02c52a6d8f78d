using System.Text;
using QubesFirewall.Engine.AdminApi;
using QubesFirewall.Engine.Agent;
using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Deployment;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;
using QubesFirewall.Engine.Tests.AdminApi;

namespace QubesFirewall.Engine.Tests.Deployment;

/// <summary>
/// The executor reads again what it writes: a feature or property someone else changed between the plan and the write
/// stops the rollout with PlanOutdated, before anything of that qube is written; what the plan had already changed is
/// put back, and the other change is kept. On the offline root and through the stand-in qubesd.
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class WriteCheckTests : IDisposable
{
    private readonly TempRoot _root = new();

    public WriteCheckTests()
    {
        foreach (var qube in new[] { "sys-net", "sys-firewall", "work" })
            _root.Backend.SetFeature(qube, AgentScript.VersionFeature, AgentScript.Version);
    }

    public void Dispose() => _root.Dispose();

    private static PortForward Web => PortForward.Create("work", ForwardProtocol.Tcp, 443, 8443, allowFrom: ["192.168.1.0/24"]);

    // The last qube the plan writes to that is not the first one: the steps before it are written, then the check stops it.
    /// <summary>A plan of the given steps, as a cmdlet's planner would make it.</summary>
    private static Plan SetPlan(string target, string purpose, params DeploymentStep[] steps) =>
        new() { Operation = PlanOperation.Set, Target = target, Description = "test", Purpose = purpose, Steps = steps };

    private static DeploymentStep LateStep(IDeploymentPlan plan) => plan.Steps.Last(s => s.VMName != plan.Steps[0].VMName);

    private static Dictionary<string, string> Own(IQubesBackend backend, string qube) =>
        backend.GetInventory().Get(qube).Features.Where(f => OwnFeatures.IsOwn(f.Key) && f.Key != AgentScript.VersionFeature).ToDictionary(f => f.Key, f => f.Value);

    [Fact]
    public void Offline_a_feature_someone_else_set_after_the_plan_stops_the_forward_and_everything_is_put_back()
    {
        var plan = PortForwardPlanner.PlanAdd(_root.Backend, Web, DeploymentOptions.For(_root.Backend, _root.Now));
        var late = LateStep(plan);
        Assert.Null(late.PreviousFeatureValue); // a new key: the plan read it absent
        var before = new[] { "sys-net", "sys-firewall", "work" }.ToDictionary(q => q, q => Own(_root.Backend, q));

        // Another process (another dom0 session, qvm-features) sets it meanwhile.
        new OfflineRoot(_root.Path).SetFeature(late.VMName, late.FeatureName!, "set by someone else");

        var result = PortForwardPlanner.Apply(_root.Backend, plan);
        Assert.NotNull(result.Failure);
        Assert.Equal("PlanOutdated", result.Failure!.ErrorId);
        Assert.Contains($"feature {late.FeatureName} of {late.VMName} is 'set by someone else' now, not set when this plan was made", result.Failure.Message);
        Assert.Contains("Nothing is left changed.", result.Failure.Message);
        var run = result.Rollout!;
        var stopped = Array.FindIndex(run.Steps.ToArray(), s => s.Status == DeploymentStepStatus.Failed);
        Assert.Equal(late.VMName, run.Steps[stopped].Step.VMName);
        Assert.Equal(plan.Steps.ToList().FindIndex(s => s.VMName == late.VMName), stopped); // at the first write to that qube
        Assert.True(stopped > 0);
        Assert.All(run.Steps.Take(stopped), s => Assert.Equal(DeploymentStepStatus.RolledBack, s.Status));
        Assert.All(run.Steps.Skip(stopped + 1), s => Assert.Equal(DeploymentStepStatus.NotReached, s.Status));
        // Every qube as it was, but for the other change, which is kept.
        foreach (var (qube, features) in before)
        {
            var now = Own(_root.Backend, qube);
            if (qube == late.VMName) Assert.Equal("set by someone else", now[late.FeatureName!]);
            now.Remove(late.FeatureName!);
            Assert.Equal(features.OrderBy(f => f.Key), now.OrderBy(f => f.Key));
        }
    }

    [Fact]
    public void Offline_a_property_changed_after_the_plan_stops_the_plan_and_the_feature_before_it_is_put_back()
    {
        var inventory = _root.Backend.GetInventory();
        var label = inventory.Get("personal").Properties.GetValueOrDefault("label");
        Assert.NotEqual("green", label);
        var plan = SetPlan("work, personal", "set a feature and a label",
            DeploymentStep.SetFeature("work", "qubesfirewall.test", "1", null)!,
            DeploymentStep.SetProperty("personal", "label", "purple", label, "personal: label purple"));
        new OfflineRoot(_root.Path).SetProperty("personal", "label", "green");

        var applied = plan.Apply(_root.Backend);
        Assert.Equal("PlanOutdated", applied.Failure!.ErrorId);
        Assert.Contains($"property label of personal is 'green' now, {(label is null ? "at its default" : $"'{label}'")} when this plan was made", applied.Failure.Message);
        Assert.Equal([DeploymentStepStatus.RolledBack, DeploymentStepStatus.Failed], applied.Result.Steps.Select(s => s.Status));
        var after = _root.Backend.GetInventory();
        Assert.False(after.Get("work").Features.ContainsKey("qubesfirewall.test"));
        Assert.Equal("green", after.Get("personal").Properties["label"]);
    }

    [Fact]
    public void Offline_a_plan_on_current_values_is_not_stopped_and_later_steps_on_the_same_name_are_planned_on_the_earlier_ones()
    {
        var plan = SetPlan("work", "set a feature twice",
            DeploymentStep.SetFeature("work", "qubesfirewall.test", "1", null)!,
            DeploymentStep.SetFeature("work", "qubesfirewall.test", "2", "1")!);
        var applied = plan.Apply(_root.Backend);
        Assert.Null(applied.Failure);
        Assert.Equal("2", _root.Backend.GetInventory().Get("work").Features["qubesfirewall.test"]);
    }

    [Fact]
    public void Live_a_declaration_someone_else_added_meanwhile_stops_the_forward_with_one_feature_List_per_qube_and_everything_is_put_back()
    {
        using var live = new LiveQubesd();
        var backend = live.Backend;
        var options = DeploymentOptions.For(backend, DateTimeOffset.UtcNow) with { AgentWait = TimeSpan.Zero };
        var plan = PortForwardPlanner.PlanAdd(backend, Web, options);
        var late = LateStep(plan);
        var before = new[] { "sys-net", "sys-firewall", "work" }.ToDictionary(q => q, q => Own(live.NewBackend(), q));

        // Another admin, through qubesd: qvm-features <late qube> <name> <value>.
        new QubesdClient(live.Server.SocketPath).Call("admin.vm.feature.Set", late.VMName, late.FeatureName, Encoding.ASCII.GetBytes("by-hand"));
        live.Server.ClearCalls();

        var result = PortForwardPlanner.Apply(backend, plan);
        Assert.Equal("PlanOutdated", result.Failure!.ErrorId);
        Assert.Contains($"feature {late.FeatureName} of {late.VMName} is 'by-hand' now, not set when this plan was made", result.Failure.Message);
        var reached = plan.Steps.TakeWhile(s => s.VMName != late.VMName).Select(s => s.VMName).Append(late.VMName).Distinct().ToList();
        // Read again: one List per qube reached (the values of the module's own features are the ones kept), one Get where it changed.
        Assert.Equal(reached.Order(), live.Server.Calls.Where(c => c.Method == "admin.vm.feature.List").Select(c => c.Destination).Order());
        Assert.Equal([late.VMName], live.Server.Calls.Where(c => c.Method == "admin.vm.feature.Get").Select(c => c.Destination));
        Assert.DoesNotContain(live.Server.Calls, c => c.Method == "admin.vm.feature.Set" && c.Destination == late.VMName);

        var fresh = live.NewBackend();
        foreach (var (qube, features) in before)
        {
            var now = Own(fresh, qube);
            if (qube == late.VMName) Assert.Equal("by-hand", now[late.FeatureName!]);
            now.Remove(late.FeatureName!);
            Assert.Equal(features.OrderBy(f => f.Key), now.OrderBy(f => f.Key));
        }
    }

    [Fact]
    public void Live_a_forward_on_current_values_reads_again_one_feature_List_per_qube_and_no_value()
    {
        using var live = new LiveQubesd();
        var backend = live.Backend;
        var plan = PortForwardPlanner.PlanAdd(backend, Web, DeploymentOptions.For(backend, DateTimeOffset.UtcNow) with { AgentWait = TimeSpan.Zero });
        live.Server.ClearCalls();
        var result = PortForwardPlanner.Apply(backend, plan);
        Assert.Null(result.Failure);
        var written = plan.Steps.Select(s => s.VMName).Distinct().Order().ToList();
        Assert.Equal(3, written.Count);
        Assert.Equal(written, live.Server.Calls.Where(c => c.Method == "admin.vm.feature.List").Select(c => c.Destination).Order());
        Assert.DoesNotContain(live.Server.Calls, c => c.Method == "admin.vm.feature.Get");
        Assert.Equal(plan.Steps.Count, live.Server.CountCalls("admin.vm.feature.Set"));
    }

    [Fact]
    public void Live_a_netvm_changed_after_the_plan_stops_the_repair_before_it_is_set()
    {
        using var live = new LiveQubesd();
        var backend = live.Backend;
        var plan = SetPlan("work", "set the netvm of work",
            DeploymentStep.SetProperty("work", "netvm", "sys-net", backend.GetInventory().Get("work").Properties.GetValueOrDefault("netvm"), "work: netvm sys-net"));
        new QubesdClient(live.Server.SocketPath).Call("admin.vm.property.Set", "work", "netvm", []); // qvm-prefs work netvm ''
        live.Server.ClearCalls();
        var applied = plan.Apply(backend);
        Assert.Equal("PlanOutdated", applied.Failure!.ErrorId);
        Assert.Contains("property netvm of work is '' now", applied.Failure.Message);
        Assert.Equal(1, live.Server.CountCalls("admin.vm.property.GetAll", "work"));
        Assert.Equal(0, live.Server.CountCalls("admin.vm.property.Set"));
        Assert.Null(live.NewBackend().GetInventory().Get("work").NetVM);
    }
}
