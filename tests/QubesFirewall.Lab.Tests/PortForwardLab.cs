using QubesFirewall.Engine.Deployment;
using System.Globalization;
using System.Text;
using QubesFirewall.Engine.Agent;
using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;
using QubesFirewall.Lab.Tests.Lab;

namespace QubesFirewall.Lab.Tests;

/// <summary>
/// Drives the real engine against the lab: an offline Qubes root whose qubes.xml describes the lab's
/// topology (same names, qids, netvms, so the same addresses) and records the agent on every qube, the real
/// planner and Apply on it, then what qubesd does with the features set: each <c>vm-config.*</c> feature
/// exported to the running qube's QubesDB stand-in, where the module's agent (started in every qube by its
/// hook, as Install-QubeFirewallAgent leaves it) applies them; Execute waits until each agent reports the
/// generation the plan gave it. Everything the lab runs is text the engine generated.
/// </summary>
public sealed class PortForwardLab : IDisposable
{
    private readonly LabTopology _lab;

    /// <param name="agents">Start the agent in every qube (false: the caller runs agents of its own).</param>
    public PortForwardLab(LabTopology lab, bool agents = true)
    {
        _lab = lab;
        RootPath = Path.Combine(lab.WorkDir, "qubes-root-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(RootPath);
        File.WriteAllText(Path.Combine(RootPath, "qubes.xml"), QubesXmlFor(lab.Options, agent: true));
        Backend = new OfflineRoot(RootPath);
        if (!agents) return;
        Agents = new AgentLab(lab);
        foreach (var q in lab.Options.Qubes)
        {
            Agents.CreateQubesDb(q.Name);
            Agents.InstallHook(q.Name, q.ProvidesNetwork);
            Agents.RunHook(q.Name).Result.EnsureSuccess($"agent hook in {q.Name}");
        }
        foreach (var q in lab.Options.Qubes) Agents.WaitApplied(q.Name, null);
    }

    /// <summary>The agents running in the lab's qubes (null when the caller runs its own).</summary>
    public AgentLab? Agents { get; }

    /// <summary>For each qube, how long its agent took to report the generation of the last change, from the end of the feature calls.</summary>
    public Dictionary<string, TimeSpan> AgentTimes { get; } = [];

    /// <summary>
    /// A qube started again: its agent stopped, its QubesDB made anew from the features dom0 holds for it (what qubesd does at
    /// start), then the lab's reboot (base ruleset, then the hooks, which start the agent); waits until the agent applied them.
    /// </summary>
    public IReadOnlyList<LabExecResult> Restart(string qube)
    {
        if (Agents is null) return _lab.Reboot(qube);
        Agents.Stop(qube);
        var features = Backend.GetInventory().Get(qube).Features;
        Agents.CreateQubesDb(qube, features.Where(f => AgentFeatures.IsAgentFeature(f.Key)));
        var runs = _lab.Reboot(qube);
        var gen = features.GetValueOrDefault(AgentFeatures.GenFeature) is { } g ? g.Split(' ').First(w => w.StartsWith("gen=", StringComparison.Ordinal))[4..] : null;
        Agents.WaitApplied(qube, gen);
        return runs;
    }

    public string RootPath { get; }

    public OfflineRoot Backend { get; }

    public DateTimeOffset Now { get; set; } = DateTimeOffset.UtcNow;

    /// <summary>Every script the lab ran, in order (qube, script).</summary>
    public List<(string Qube, string Script)> Ran { get; } = [];

    public PortForwardPlan Add(PortForward forward)
    {
        var plan = PortForwardPlanner.PlanAdd(Backend, forward, DeploymentOptions.For(Backend, Now));
        Execute(plan);
        return plan;
    }

    public PortForwardPlan Remove(string vmName, ForwardProtocol protocol, int port)
    {
        var plan = PortForwardPlanner.PlanRemove(Backend, vmName, protocol, port, DeploymentOptions.For(Backend, Now));
        Execute(plan);
        return plan;
    }

    /// <summary>Applies the plan on the offline root, copies the files into the lab, runs each run step's script in its qube.</summary>
    public void Execute(PortForwardPlan plan) => Mirror(PortForwardPlanner.Apply(Backend, plan), plan.AgentGenerations);

    public void Execute(InterVmLinkPlan plan) => Mirror(InterVmLinkPlanner.Apply(Backend, plan), plan.AgentGenerations);

    /// <summary>
    /// Does in the lab's qubes what happens after the offline root recorded the steps: qubesd's export of each agent feature set
    /// or removed to the qube's QubesDB (the agents apply them), the files written and the scripts run of other steps; then waits
    /// until each qube's agent reports the generation the plan gave it.
    /// </summary>
    private void Mirror(HopResults result, IReadOnlyDictionary<string, string> generations)
    {
        Assert.Null(result.Failure);
        foreach (var step in result.Rollout!.Steps.Select(r => r.Step))
        {
            switch (step.Kind)
            {
                case DeploymentStepKind.SetFeature when Agents is not null && AgentFeatures.IsAgentFeature(step.FeatureName!):
                    Agents.SetFeature(step.VMName, step.FeatureName!, step.FeatureValue!);
                    break;
                case DeploymentStepKind.RemoveFeature when Agents is not null && AgentFeatures.IsAgentFeature(step.FeatureName!):
                    Agents.RemoveFeature(step.VMName, step.FeatureName!);
                    break;
                case DeploymentStepKind.WriteFile:
                    var content = Backend.ReadQubeFile(step.VMName, step.Path!);
                    Assert.Equal(step.Content, content);
                    Assert.True((File.GetUnixFileMode(Backend.QubeFilePath(step.VMName, step.Path!)) & UnixFileMode.UserExecute) != 0);
                    _lab.WriteRwConfig(step.VMName, RelativeToRwConfig(step.Path!), content!, executable: true);
                    break;
                case DeploymentStepKind.RunScript:
                    RunScript(step.VMName, step.Script!).EnsureSuccess($"port forward script in {step.VMName}");
                    break;
            }
        }
        if (Agents is null) return;
        foreach (var (qube, generation) in generations) AgentTimes[qube] = Agents.WaitApplied(qube, generation);
    }

    /// <summary>Runs a generated script with bash in the qube's namespace (from a file: the scripts can be long).</summary>
    public LabExecResult RunScript(string qube, string script)
    {
        Ran.Add((qube, script));
        var file = Path.Combine(_lab.WorkDir, $"run-{qube}-{Guid.NewGuid():N}.sh");
        File.WriteAllText(file, script, new UTF8Encoding(false));
        try
        {
            return _lab.Exec(qube, ["bash", file], stdin: null);
        }
        finally
        {
            File.Delete(file);
        }
    }

    /// <summary>Runs a generated script <paramref name="times"/> times in a row in one bash (stops at the first failure).</summary>
    public LabExecResult RunScriptRepeatedly(string qube, string script, int times)
    {
        Ran.Add((qube, script));
        var file = Path.Combine(_lab.WorkDir, $"run-{qube}-{Guid.NewGuid():N}.sh");
        File.WriteAllText(file, script, new UTF8Encoding(false));
        try
        {
            return _lab.Exec(qube, ["bash", "-c", $"for i in $(seq {times}); do bash '{file}' || exit 1; done"], stdin: null);
        }
        finally
        {
            File.Delete(file);
        }
    }

    /// <summary>What Export-QubeFirewallScript gives for the qube (null when no forward crosses it).</summary>
    public string? Export(string qube) => PortForwardPlanner.Export(Backend.GetInventory(), qube)?.Script;

    public static string RelativeToRwConfig(string path)
    {
        const string prefix = "/rw/config/";
        Assert.StartsWith(prefix, path, StringComparison.Ordinal);
        return path[prefix.Length..];
    }

    /// <summary>A qubes.xml for the lab's qubes: AppVMs with the lab's qid, netvm, provides_network and ipv6 feature (and the agent's record); default_netvm empty.</summary>
    public static string QubesXmlFor(LabTopologyOptions options, bool agent = false)
    {
        var sb = new StringBuilder();
        sb.Append("<qubes>\n  <labels>\n    <label id=\"label-1\" color=\"0xcc0000\">red</label>\n  </labels>\n");
        sb.Append("  <properties>\n    <property name=\"default_netvm\"></property>\n  </properties>\n  <domains>\n");
        sb.Append("    <domain id=\"domain-0\" class=\"AdminVM\">\n      <properties>\n        <property name=\"label\">red</property>\n      </properties>\n      <features/>\n      <tags/>\n    </domain>\n");
        foreach (var q in options.Qubes)
        {
            var qid = q.Qid.ToString(CultureInfo.InvariantCulture);
            sb.Append($"    <domain id=\"domain-{qid}\" class=\"AppVM\">\n      <properties>\n");
            sb.Append("        <property name=\"label\">red</property>\n");
            sb.Append($"        <property name=\"name\">{q.Name}</property>\n");
            sb.Append($"        <property name=\"qid\">{qid}</property>\n");
            if (q.ProvidesNetwork) sb.Append("        <property name=\"provides_network\">True</property>\n");
            sb.Append($"        <property name=\"netvm\">{q.NetVm ?? ""}</property>\n");
            // the ipv6 feature as the lab sets it: on a qube that says so, else on the network qubes without netvm when the lab has IPv6
            var ipv6 = q.Ipv6 is { } own ? (own ? "1" : "") : q.NetVm is null && q.ProvidesNetwork && options.Ipv6 ? "1" : null;
            sb.Append("      </properties>\n");
            sb.Append("      <features>\n");
            if (ipv6 is not null) sb.Append($"        <feature name=\"ipv6\">{ipv6}</feature>\n");
            // as Install-QubeFirewallAgent leaves it: forwards and links reach the qube only through its agent
            if (agent) sb.Append($"        <feature name=\"{AgentScript.VersionFeature}\">{AgentScript.Version}</feature>\n");
            sb.Append("      </features>\n");
            sb.Append("      <tags/>\n    </domain>\n");
        }
        sb.Append("  </domains>\n</qubes>\n");
        return sb.ToString();
    }

    public void Dispose()
    {
        Agents?.Dispose();
        Backend.Dispose();
    }
}
