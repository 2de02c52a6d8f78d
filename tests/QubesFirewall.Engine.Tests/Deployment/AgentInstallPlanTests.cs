using QubesFirewall.Engine.Agent;
using QubesFirewall.Engine.Deployment;

namespace QubesFirewall.Engine.Tests.Deployment;

/// <summary>Installing and removing the agent are plans run by the one executor: a failure half-way puts back what was done.</summary>
public sealed class AgentInstallPlanTests : IDisposable
{
    private readonly TempRoot _root = new();

    public AgentInstallPlanTests()
    {
        if (_root.Backend.GetInventory().Get("work").Features.ContainsKey(AgentScript.VersionFeature))
            _root.Backend.RemoveFeature("work", AgentScript.VersionFeature);
    }

    public void Dispose() => _root.Dispose();

    [Fact]
    public void An_agent_that_does_not_start_is_AgentStartFailed_and_its_files_are_put_back()
    {
        var plan = AgentInstaller.PlanInstall(_root.Backend, "work");
        Assert.Equal(PlanOperation.Install, plan.Operation);
        Assert.Equal([DeploymentStepKind.WriteFile, DeploymentStepKind.WriteFile, DeploymentStepKind.RunScript, DeploymentStepKind.SetFeature], plan.Steps.Select(s => s.Kind));

        var faulty = new FaultyBackend(_root.Backend) { FailRunIn = "work" };
        var ex = Assert.Throws<QubesFirewallException>(() => AgentInstaller.Install(faulty, "work"));
        Assert.Equal("AgentStartFailed", ex.ErrorId);
        Assert.Contains("failed at \"work: start the agent", ex.Message);
        Assert.Contains($"Rolled back: {AgentScript.AgentPath} of work; {AgentScript.RcLocalHookPath} of work.", ex.Message);
        Assert.Null(_root.Backend.ReadQubeFile("work", AgentScript.AgentPath));
        Assert.Null(_root.Backend.ReadQubeFile("work", AgentScript.RcLocalHookPath));
        Assert.False(_root.Backend.GetInventory().Get("work").Features.ContainsKey(AgentScript.VersionFeature));
        Assert.Equal(["write work " + AgentScript.AgentPath, "write work " + AgentScript.RcLocalHookPath, "run work start the QubesFirewall agent",
            "delete work " + AgentScript.RcLocalHookPath, "delete work " + AgentScript.AgentPath], faulty.Calls);
    }

    [Fact]
    public void Uninstall_deletes_what_install_wrote_and_a_rollback_writes_it_back_and_starts_the_agent_again()
    {
        AgentInstaller.Install(_root.Backend, "work");
        var plan = AgentInstaller.PlanUninstall(_root.Backend, "work");
        Assert.Equal(PlanOperation.Uninstall, plan.Operation);
        Assert.Equal([DeploymentStepKind.RunScript, DeploymentStepKind.WriteFile, DeploymentStepKind.WriteFile, DeploymentStepKind.RemoveFeature], plan.Steps.Select(s => s.Kind));
        Assert.All(plan.Steps.Where(s => s.Kind == DeploymentStepKind.WriteFile), s => Assert.Null(s.Content));

        // someone removed the record by hand after the plan: the executor's re-read stops it, the files come back, the agent is started again
        _root.Backend.RemoveFeature("work", AgentScript.VersionFeature);
        var faulty = new FaultyBackend(_root.Backend);
        var done = plan.Apply(faulty);
        Assert.Equal("PlanOutdated", done.Failure!.ErrorId);
        Assert.Equal(AgentScript.Text, _root.Backend.ReadQubeFile("work", AgentScript.AgentPath));
        Assert.Equal(AgentScript.HookText(firewallHook: false), _root.Backend.ReadQubeFile("work", AgentScript.RcLocalHookPath));
        Assert.Equal(["run work stop the QubesFirewall agent", "delete work " + AgentScript.RcLocalHookPath, "delete work " + AgentScript.AgentPath,
            "write work " + AgentScript.AgentPath, "write work " + AgentScript.RcLocalHookPath, "run work rollback: previous stop the QubesFirewall agent"], faulty.Calls);
    }
}
