using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Deployment;
using QubesFirewall.Engine.Formats;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Persistence;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.Engine.Tests.Deployment;

/// <summary>A backend that passes every call to <paramref name="inner"/>; the test backends below change the calls they are about.</summary>
internal abstract class DelegatingBackend(IQubesBackend inner) : IQubesBackend
{
    public virtual string Description => inner.Description;
    public QubesInventory GetInventory() => inner.GetInventory();
    public FirewallDocument GetFirewall(string vmName) => inner.GetFirewall(vmName);
    public FirewallEditOutcome ApplyFirewallEdit(string vmName, FirewallEdit edit, FirewallDocument snapshot) => inner.ApplyFirewallEdit(vmName, edit, snapshot);
    public IReadOnlyList<QubesDbEntry> SyncFirewall(string vmName) => inner.SyncFirewall(vmName);
    public virtual void SetFeature(string vmName, string name, string value) => inner.SetFeature(vmName, name, value);
    public virtual bool RemoveFeature(string vmName, string name) => inner.RemoveFeature(vmName, name);
    public virtual string? ReadQubeFile(string vmName, string path) => inner.ReadQubeFile(vmName, path);
    public virtual void WriteQubeFile(string vmName, string path, string content, UnixFileMode mode) => inner.WriteQubeFile(vmName, path, content, mode);
    public virtual void DeleteQubeFile(string vmName, string path) => inner.DeleteQubeFile(vmName, path);
    public QubeCommandResult RunQubeScript(string vmName, string path) => inner.RunQubeScript(vmName, path);
    public virtual QubeCommandResult RunQubeShellScript(string vmName, string script, string description) => inner.RunQubeShellScript(vmName, script, description);
    public virtual void StartQube(string vmName) => inner.StartQube(vmName);
    public void SetProperty(string vmName, string name, string value) => inner.SetProperty(vmName, name, value);
    public void ResetProperty(string vmName, string name) => inner.ResetProperty(vmName, name);
    public IDisposable? LockDeployments() => inner.LockDeployments();
    public IReadOnlyList<string> ListDom0Files(string directory) => inner.ListDom0Files(directory);
    public string? ReadDom0File(string path) => inner.ReadDom0File(path);
    public void WriteDom0File(string path, string content, UnixFileMode mode) => inner.WriteDom0File(path, content, mode);
    public bool DeleteDom0File(string path) => inner.DeleteDom0File(path);
    public void Dispose() => inner.Dispose();
}

/// <summary>
/// An offline root whose qubes can be told to fail: a script run in <see cref="FailRunIn"/> exits 1 (as a
/// broken nft would), a write into <see cref="FailWriteIn"/> throws, a feature of <see cref="FailFeatureIn"/> is refused
/// (as qubesd refuses one); every call is recorded in order. Not an offline root: each running qube's agent is asked for its
/// status, and answers that it applied the generation its keys carry (the agent of <see cref="FailAgentIn"/> that it failed).
/// </summary>
internal sealed class FaultyBackend(OfflineRoot root) : DelegatingBackend(root)
{
    public string? FailRunIn { get; set; }
    public string? FailWriteIn { get; set; }
    public string? FailFeatureIn { get; set; }
    public string? FailAgentIn { get; set; }

    /// <summary>After how many successful runs in <see cref="FailRunIn"/> the next one fails (0: the first).</summary>
    public int FailRunAfter { get; set; }

    public List<string> Calls { get; } = [];

    public override string Description => "faulty " + base.Description;

    public override void SetFeature(string vmName, string name, string value)
    {
        Calls.Add($"set-feature {vmName} {name}={value}");
        if (vmName == FailFeatureIn)
        {
            FailFeatureIn = null;
            throw new QubesFirewallException("QubesdRefused", FailureKind.InvalidOperation, $"qubesd refused the feature {name} of '{vmName}'.", vmName);
        }
        base.SetFeature(vmName, name, value);
    }

    public override bool RemoveFeature(string vmName, string name)
    {
        Calls.Add($"remove-feature {vmName} {name}");
        return base.RemoveFeature(vmName, name);
    }

    // what the agent of a running qube writes to its status file: the generation its keys carry, applied (or failed)
    private string AgentStatus(string vmName)
    {
        // the gen key reads "for=<qube> gen=<hash> keys=<n>"
        var sealedBy = GetInventory().Get(vmName).Features.GetValueOrDefault(Agent.AgentFeatures.GenFeature);
        var gen = sealedBy is null ? "none" : System.Text.RegularExpressions.Regex.Match(sealedBy, " gen=([0-9a-f]{16})").Groups[1].Value;
        return vmName == FailAgentIn
            ? $"state=failed gen={gen} applied=none version={Agent.AgentScript.Version} msg=nft: Error: Could not process rule\n"
            : $"state=applied gen={gen} applied={gen} version={Agent.AgentScript.Version} msg=\n";
    }

    public override void WriteQubeFile(string vmName, string path, string content, UnixFileMode mode)
    {
        Calls.Add($"write {vmName} {path}");
        if (vmName == FailWriteIn)
            throw new QubesFirewallException("QubeCommandFailed", FailureKind.InvalidOperation, $"Cannot write {path} in '{vmName}': disk full.", vmName);
        base.WriteQubeFile(vmName, path, content, mode);
    }

    public override void DeleteQubeFile(string vmName, string path)
    {
        Calls.Add($"delete {vmName} {path}");
        base.DeleteQubeFile(vmName, path);
    }

    public override QubeCommandResult RunQubeShellScript(string vmName, string script, string description)
    {
        Calls.Add($"run {vmName} {description}");
        if (script == Agent.AgentDelivery.StatusCommand) return new QubeCommandResult(vmName, "(standard input)", 0, AgentStatus(vmName), Executed: true);
        if (vmName == FailRunIn && FailRunAfter-- <= 0)
        {
            FailRunIn = null;
            return new QubeCommandResult(vmName, "(standard input)", 1, "Error: Could not process rule: No such file or directory", Executed: true);
        }
        var recorded = base.RunQubeShellScript(vmName, script, description);
        return recorded with { Executed = true, Output = "" }; // as if it ran: the live backend's statuses
    }

    public override void StartQube(string vmName)
    {
        Calls.Add($"start {vmName}");
        base.StartQube(vmName);
    }
}

/// <summary>
/// Port forwards and ConnectTCP bindings deployed through the one hop rollout: a hop that fails stops it,
/// every change before it is put back (files, rules, feature), and the results say what happened where.
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class HopRolloutTests : IDisposable
{
    private const string UserLines = "#!/bin/sh\n# the user's own line\necho mine\n";
    private readonly TempRoot _root = new(QubesXmlBuilder.Standard().Build());
    private readonly FaultyBackend _backend;

    public HopRolloutTests()
    {
        _backend = new FaultyBackend(_root.Backend);
        foreach (var q in new[] { "sys-net", "sys-firewall", "work", "untrusted" }) _root.Backend.SetPowerState(q, PowerState.Running);
    }

    public void Dispose() => _root.Dispose();

    private DeploymentOptions Options => DeploymentOptions.For(_root.Backend, _root.Now);

    private static PortForward Web(string allow = "192.168.1.0/24") => PortForward.Create("work", ForwardProtocol.Tcp, 443, allowFrom: [allow]);

    private string? File(string qube, string path) => _root.Backend.ReadQubeFile(qube, path);

    private Dictionary<string, string> Keys(string qube) =>
        _root.Backend.GetInventory().Get(qube).Features.Where(f => Agent.AgentFeatures.IsAgentFeature(f.Key)).ToDictionary(f => f.Key, f => f.Value);

    private void AssertKeysMatchDeclarations()
    {
        var inventory = _root.Backend.GetInventory();
        Assert.Empty(Agent.AgentFeatures.Changes(inventory, Agent.AgentFeatures.DeriveAll(inventory)));
    }

    /// <summary>Every file of the state folder (applied logs and locks aside) and qubes.xml.</summary>
    private Dictionary<string, string> Snapshot() =>
        Directory.EnumerateFiles(_root.Path, "*", SearchOption.AllDirectories)
            .Where(f => !f.EndsWith("applied.log", StringComparison.Ordinal) && !f.EndsWith(".lock", StringComparison.Ordinal) && !f.EndsWith("last-run.sh", StringComparison.Ordinal))
            .ToDictionary(f => f, System.IO.File.ReadAllText);

    [Fact]
    public void An_ipv6_change_whose_forward_fails_to_load_is_put_back_feature_included()
    {
        // open to everyone: the forward gains an IPv6 part (keys of its own) when IPv6 comes on along its chain
        var open = PortForward.Create("work", ForwardProtocol.Tcp, 443);
        Assert.Null(PortForwardPlanner.Apply(_backend, PortForwardPlanner.PlanAdd(_backend, open, Options)).Failure);
        var before = Snapshot();
        var features = _root.Backend.GetInventory().Get("sys-net").Features.ToDictionary();
        _backend.Calls.Clear();

        // IPv6 on at sys-net: the forward through it is laid out again with its IPv6 part, and qubesd refuses sys-firewall's new keys.
        _backend.FailFeatureIn = "sys-firewall";
        var change = IPv6Planner.Plan(_backend.GetInventory(), "sys-net", IPv6Setting.Enabled);
        var plan = IPv6Planner.AsPlan(change, IPv6Effects.Of(_backend.GetInventory(), change), _root.Now);
        Assert.Equal([DeploymentStepKind.SetFeature, DeploymentStepKind.Redeploy], plan.Steps.Select(s => s.Kind));
        var result = plan.Apply(_backend);

        Assert.Equal("PortForwardRolledBack", result.Failure!.ErrorId);
        Assert.Contains("Rolled back: feature ipv6 of sys-net.", result.Failure.Message);
        Assert.Equal([DeploymentStepStatus.RolledBack, DeploymentStepStatus.Failed], result.Result.Steps.Select(s => s.Status));
        Assert.Equal("set-feature sys-net ipv6=1", _backend.Calls[0]);
        Assert.Equal("remove-feature sys-net ipv6", _backend.Calls[^1]);
        // qubes.xml holds the same features (the offline root may write the element back in another layout); every hook file is as it was.
        Assert.Equal(features, _root.Backend.GetInventory().Get("sys-net").Features.ToDictionary());
        bool NotXml(string f) => !f.EndsWith("qubes.xml", StringComparison.Ordinal);
        Assert.Equal(before.Where(kv => NotXml(kv.Key)), Snapshot().Where(kv => NotXml(kv.Key)));
    }

    [Fact]
    public void The_outermost_hops_agent_failing_puts_the_update_back_everywhere()
    {
        _root.Backend.WriteQubeFile("sys-net", HookFiles.FirewallUserScript, UserLines, ManagedBlock.FileMode);
        Assert.Null(PortForwardPlanner.Apply(_backend, PortForwardPlanner.PlanAdd(_backend, Web(), Options)).Failure);
        var before = Snapshot();
        _backend.Calls.Clear();

        // An update (another source network) whose last hop's agent, sys-net's, fails to load it.
        _backend.FailAgentIn = "sys-net";
        var plan = PortForwardPlanner.PlanAdd(_backend, Web("10.9.0.0/16"), Options);
        Assert.Equal(PlanOperation.Update, plan.Operation);
        var result = PortForwardPlanner.Apply(_backend, plan);

        Assert.Equal("PortForwardAgentFailed", result.Failure!.ErrorId);
        Assert.Equal([("sys-firewall", PortForwardHopStatus.RolledBack), ("sys-net", PortForwardHopStatus.Failed), ("work", PortForwardHopStatus.RolledBack)],
            result.Hops.Select(h => (h.VMName, h.Status)));
        Assert.Contains("Could not process rule", result.Hops[1].Message);
        Assert.Contains("Could not process rule", result.Failure.Message);
        Assert.Contains("Every feature was put back as it was.", result.Failure.Message);

        // Every feature is as it was; the user's line in sys-net never went away (nothing is written into a qube).
        Assert.Equal(before, Snapshot());
        Assert.Contains("allow=192.168.1.0/24", _root.Backend.GetInventory().Get("work").Features["qubesfirewall.forward.tcp.443"]);
        Assert.Equal(UserLines, File("sys-net", HookFiles.FirewallUserScript));
        AssertKeysMatchDeclarations();

        // The order: the features (declaration first, each qube's gen after its keys), one status read per running qube,
        // then every feature put back in reverse order.
        var n = plan.Steps.Count;
        Assert.Equal(plan.Steps.Select(s => $"set-feature {s.VMName} {s.FeatureName}={s.FeatureValue}"), _backend.Calls.Take(n));
        Assert.Equal(["run sys-firewall read the QubesFirewall agent status", "run sys-net read the QubesFirewall agent status", "run work read the QubesFirewall agent status"],
            _backend.Calls.Skip(n).Take(3));
        Assert.Equal(plan.Steps.Reverse().Select(s => $"set-feature {s.VMName} {s.FeatureName}={s.PreviousFeatureValue}"), _backend.Calls.Skip(n + 3));
    }

    [Fact]
    public void A_failing_rollback_is_reported_as_needing_attention()
    {
        // qubesd refuses sys-firewall's keys, and putting back sys-net's keys set before them fails too
        _backend.FailFeatureIn = "sys-firewall";
        var plan = PortForwardPlanner.PlanAdd(_backend, Web(), Options);
        var progress = new List<DeploymentProgress>();
        var partial = PortForwardPlanner.Apply(new FailingRollbackBackend(_backend, "sys-net"), plan, new RolloutOptions { Progress = progress.Add });
        Assert.Equal("PortForwardPartiallyApplied", partial.Failure!.ErrorId);
        Assert.True(partial.Failure.Message.Contains("Could NOT be put back (check these by hand): feature vm-config.qubesfw.hop4.", StringComparison.Ordinal), partial.Failure.Message);
        Assert.Contains("feature vm-config.qubesfw.gen of sys-net: ", partial.Failure.Message);
        Assert.Contains("Rolled back: feature qubesfirewall.forward.tcp.443 of work.", partial.Failure.Message);
        Assert.Contains("Read-only file system", partial.Failure.Message);
        Assert.DoesNotContain("Nothing is left changed", partial.Failure.Message);
        Assert.Equal(["sys-net", "sys-net", "work"], progress.Where(p => p.RollingBack).Select(p => p.Hop));
        // the rest was put back: the declaration is gone, sys-firewall has no keys; no agent was asked
        Assert.Empty(PortForwardPlanner.List(_root.Backend.GetInventory(), _root.Now));
        Assert.Empty(Keys("sys-firewall"));
        Assert.DoesNotContain(_backend.Calls, c => c.StartsWith("run ", StringComparison.Ordinal));
    }

    [Fact]
    public void A_binding_whose_listener_fails_takes_its_feature_and_file_back_and_never_grants_the_call()
    {
        _backend.FailRunIn = "untrusted";
        var binding = Model.TcpBinding.Create("untrusted", "work", 444, 10444, permanent: true);
        var plan = TcpBindingPlanner.PlanAdd(_backend, binding, DeploymentOptions.For(_root.Backend));
        var result = TcpBindingPlanner.Apply(_backend, plan);
        Assert.Equal("TcpBindingRolledBack", result.Failure!.ErrorId);
        Assert.Equal(
            [
                ("untrusted", DeploymentStepStatus.RolledBack), ("untrusted", DeploymentStepStatus.RolledBack),
                ("untrusted", DeploymentStepStatus.Failed), ("dom0", DeploymentStepStatus.NotReached),
            ], result.Changes.Select(c => (c.VMName, c.Status)));
        Assert.Equal(["feature qubesfirewall.tcp.work.444 of untrusted", "/rw/config/rc.local of untrusted", "the rules running in untrusted", "dom0's /etc/qubes/policy.d/70-qubesfirewall.policy"],
            result.Changes.Select(c => c.Change));
        Assert.Empty(TcpBindingPlanner.List(_root.Backend.GetInventory()));
        Assert.Null(File("untrusted", HookFiles.RcLocal));
        Assert.Null(_root.Backend.ReadDom0File(QrexecPolicy.FilePath));
    }

    [Fact]
    public void Under_the_root_lock_a_plan_is_made_again_so_a_forward_added_meanwhile_is_kept()
    {
        // Two writers plan at the same time (both derive sys-net's keys without the other's forward).
        var first = PortForwardPlanner.PlanAdd(_root.Backend, PortForward.Create("work", ForwardProtocol.Tcp, 8001, allowFrom: ["10.0.0.0/8"]), Options);
        var secondForward = PortForward.Create("untrusted", ForwardProtocol.Tcp, 8002, allowFrom: ["10.0.0.0/8"]);
        var second = PortForwardPlanner.PlanAdd(_root.Backend, secondForward, Options);
        Assert.Null(PortForwardPlanner.Apply(_root.Backend, first).Failure);

        // With the plan made again under the lock, both are there, and sys-net's gen seals both keys.
        var fresh = PortForwardPlanner.Apply(_root.Backend, second, replan: () => PortForwardPlanner.PlanAdd(_root.Backend, secondForward, Options));
        Assert.Null(fresh.Failure);
        Assert.NotEqual(second.AgentGenerations["sys-net"], fresh.Plan!.AgentGenerations["sys-net"]);
        var sysNet = Keys("sys-net").Where(k => k.Key != Agent.AgentFeatures.GenFeature).Select(k => k.Value).ToList();
        Assert.Contains(sysNet, v => v.Contains(" port=8001 ", StringComparison.Ordinal));
        Assert.Contains(sysNet, v => v.Contains(" port=8002 ", StringComparison.Ordinal));
        AssertKeysMatchDeclarations();
    }

    [Fact]
    public void Threads_adding_forwards_through_the_same_hops_lose_none()
    {
        const int Writers = 6;
        var errors = new System.Collections.Concurrent.ConcurrentBag<string>();
        using var go = new ManualResetEventSlim();
        var threads = Enumerable.Range(0, Writers).Select(i => new Thread(() =>
        {
            using var backend = new OfflineRoot(_root.Path, () => _root.Now); // each writer its own backend, as separate processes have
            var forward = PortForward.Create(i % 2 == 0 ? "work" : "untrusted", ForwardProtocol.Tcp, 9000 + i, allowFrom: ["10.0.0.0/8"]);
            var options = DeploymentOptions.For(backend, _root.Now);
            go.Wait();
            try
            {
                var plan = PortForwardPlanner.PlanAdd(backend, forward, options);
                var result = PortForwardPlanner.Apply(backend, plan, replan: () => PortForwardPlanner.PlanAdd(backend, forward, options));
                if (result.Failure is not null) errors.Add(result.Failure.Message);
            }
            catch (QubesFirewallException ex)
            {
                errors.Add(ex.Message);
            }
        })).ToList();
        threads.ForEach(t => t.Start());
        go.Set();
        threads.ForEach(t => t.Join());

        Assert.Empty(errors);
        var declared = PortForwardPlanner.List(_root.Backend.GetInventory(), _root.Now).Select(f => f.Port!.Value).Order().ToList();
        Assert.Equal(Enumerable.Range(9000, Writers), declared);
        var sysNet = string.Join("\n", Keys("sys-net").Values);
        var sysFirewall = string.Join("\n", Keys("sys-firewall").Values);
        for (var i = 0; i < Writers; i++)
        {
            Assert.Contains($" proto=tcp port={9000 + i} ", sysNet);
            Assert.Contains($" proto=tcp port={9000 + i} ", sysFirewall);
        }
        AssertKeysMatchDeclarations(); // each qube's gen seals all six
    }
}

/// <summary>A backend whose writes into one qube (files and features) fail once a rollback has begun (after the first failed run or refused feature).</summary>
internal sealed class FailingRollbackBackend(FaultyBackend faulty, string qube) : DelegatingBackend(faulty)
{
    private bool _rollingBack;

    public override void SetFeature(string vmName, string name, string value)
    {
        if (_rollingBack && vmName == qube) throw new IOException($"Read-only file system (qubes.xml, feature {name} of {vmName})");
        try
        {
            base.SetFeature(vmName, name, value);
        }
        catch (QubesFirewallException)
        {
            _rollingBack = true;
            throw;
        }
    }

    public override bool RemoveFeature(string vmName, string name)
    {
        if (_rollingBack && vmName == qube) throw new IOException($"Read-only file system (qubes.xml, feature {name} of {vmName})");
        return base.RemoveFeature(vmName, name);
    }

    public override void WriteQubeFile(string vmName, string path, string content, UnixFileMode mode)
    {
        if (_rollingBack && vmName == qube) throw new IOException($"No space left on device ({vmName}:{path})");
        base.WriteQubeFile(vmName, path, content, mode);
    }

    public override void DeleteQubeFile(string vmName, string path)
    {
        if (_rollingBack && vmName == qube) throw new IOException($"Read-only file system ({vmName}:{path})");
        base.DeleteQubeFile(vmName, path);
    }

    public override QubeCommandResult RunQubeShellScript(string vmName, string script, string description)
    {
        var result = base.RunQubeShellScript(vmName, script, description);
        if (!result.Succeeded) _rollingBack = true;
        return result;
    }

}
