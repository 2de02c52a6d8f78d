using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Deployment;
using QubesFirewall.Engine.Formats;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Persistence;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.Engine.Tests.Deployment;

/// <summary>
/// An offline root whose qubes can be told to fail: a script run in <see cref="FailRunIn"/> exits 1 (as a
/// broken nft would), a write into <see cref="FailWriteIn"/> throws; every call is recorded in order.
/// </summary>
internal sealed class FaultyBackend(OfflineRoot inner) : IQubesBackend
{
    public string? FailRunIn { get; set; }
    public string? FailWriteIn { get; set; }

    /// <summary>After how many successful runs in <see cref="FailRunIn"/> the next one fails (0: the first).</summary>
    public int FailRunAfter { get; set; }

    public List<string> Calls { get; } = [];

    public string Description => "faulty " + inner.Description;
    public QubesInventory GetInventory() => inner.GetInventory();
    public FirewallDocument GetFirewall(string vmName) => inner.GetFirewall(vmName);
    public FirewallEditOutcome ApplyFirewallEdit(string vmName, FirewallEdit edit, FirewallDocument snapshot) => inner.ApplyFirewallEdit(vmName, edit, snapshot);
    public IReadOnlyList<QubesDbEntry> SyncFirewall(string vmName) => inner.SyncFirewall(vmName);

    public void SetFeature(string vmName, string name, string value)
    {
        Calls.Add($"set-feature {vmName} {name}={value}");
        inner.SetFeature(vmName, name, value);
    }

    public bool RemoveFeature(string vmName, string name)
    {
        Calls.Add($"remove-feature {vmName} {name}");
        return inner.RemoveFeature(vmName, name);
    }

    public string? ReadQubeFile(string vmName, string path) => inner.ReadQubeFile(vmName, path);

    public void WriteQubeFile(string vmName, string path, string content, UnixFileMode mode)
    {
        Calls.Add($"write {vmName} {path}");
        if (vmName == FailWriteIn)
            throw new QubesFirewallException("QubeCommandFailed", FailureKind.InvalidOperation, $"Cannot write {path} in '{vmName}': disk full.", vmName);
        inner.WriteQubeFile(vmName, path, content, mode);
    }

    public void DeleteQubeFile(string vmName, string path)
    {
        Calls.Add($"delete {vmName} {path}");
        inner.DeleteQubeFile(vmName, path);
    }

    public QubeCommandResult RunQubeScript(string vmName, string path) => inner.RunQubeScript(vmName, path);

    public QubeCommandResult RunQubeShellScript(string vmName, string script, string description)
    {
        Calls.Add($"run {vmName} {description}");
        if (vmName == FailRunIn && FailRunAfter-- <= 0)
        {
            FailRunIn = null;
            return new QubeCommandResult(vmName, "(standard input)", 1, "Error: Could not process rule: No such file or directory", Executed: true);
        }
        var recorded = inner.RunQubeShellScript(vmName, script, description);
        return recorded with { Executed = true, Output = "" }; // as if it ran: the live backend's statuses
    }

    public void StartQube(string vmName)
    {
        Calls.Add($"start {vmName}");
        inner.StartQube(vmName);
    }

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

    /// <summary>Every file of the state folder (applied logs and locks aside) and qubes.xml.</summary>
    private Dictionary<string, string> Snapshot() =>
        Directory.EnumerateFiles(_root.Path, "*", SearchOption.AllDirectories)
            .Where(f => !f.EndsWith("applied.log", StringComparison.Ordinal) && !f.EndsWith(".lock", StringComparison.Ordinal) && !f.EndsWith("last-run.sh", StringComparison.Ordinal))
            .ToDictionary(f => f, System.IO.File.ReadAllText);

    [Fact]
    public void An_ipv6_change_whose_forward_fails_to_load_is_put_back_feature_included()
    {
        Assert.Null(PortForwardPlanner.Apply(_backend, PortForwardPlanner.PlanAdd(_backend, Web(), Options)).Failure);
        var before = Snapshot();
        var features = _root.Backend.GetInventory().Get("sys-net").Features.ToDictionary();
        _backend.Calls.Clear();

        // IPv6 on at sys-net: the forward through it is laid out again with its IPv6 part, and sys-net fails to load it.
        _backend.FailRunIn = "sys-net";
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
    public void The_outermost_hop_failing_puts_the_update_back_everywhere()
    {
        _root.Backend.WriteQubeFile("sys-net", ForwardPersistence.FirewallUserScript, UserLines, ManagedBlock.FileMode);
        Assert.Null(PortForwardPlanner.Apply(_backend, PortForwardPlanner.PlanAdd(_backend, Web(), Options)).Failure);
        var before = Snapshot();
        _backend.Calls.Clear();

        // An update (another source network) whose last hop, sys-net, fails to load it.
        _backend.FailRunIn = "sys-net";
        var plan = PortForwardPlanner.PlanAdd(_backend, Web("10.9.0.0/16"), Options);
        Assert.Equal("Update", plan.Operation);
        var result = PortForwardPlanner.Apply(_backend, plan);

        Assert.Equal("PortForwardRolledBack", result.Failure!.ErrorId);
        Assert.Equal(["work", "sys-firewall", "sys-net"], result.Hops.Select(h => h.VMName));
        Assert.Equal([PortForwardHopStatus.RolledBack, PortForwardHopStatus.RolledBack, PortForwardHopStatus.Failed], result.Hops.Select(h => h.Status));
        Assert.Equal(1, result.Hops[2].ExitCode);
        Assert.Contains("Could not process rule", result.Hops[2].Message);
        Assert.Contains("because 'sys-net' failed", result.Hops[0].Message);
        Assert.Contains("feature qubesfirewall.forward.tcp.443 of work", result.Failure.Message);
        Assert.Contains("Nothing is left changed.", result.Failure.Message);

        // Every file and the feature are as they were; the user's line in sys-net never went away.
        Assert.Equal(before, Snapshot());
        Assert.Contains("allow=192.168.1.0/24", _root.Backend.GetInventory().Get("work").Features["qubesfirewall.forward.tcp.443"]);
        Assert.StartsWith(UserLines, File("sys-net", ForwardPersistence.FirewallUserScript));

        // The order: feature, then inside out; on failure sys-net's previous rules, then back inwards, the feature last.
        Assert.Equal(
            [
                "set-feature work qubesfirewall.forward.tcp.443=target=443 type=external allow=10.9.0.0/16",
                "write work /rw/config/rc.local", "run work port forwards of work",
                "write sys-firewall /rw/config/qubes-firewall-user-script", "run sys-firewall port forwards of sys-firewall",
                "write sys-net /rw/config/qubes-firewall-user-script", "run sys-net port forwards of sys-net",
                "run sys-net rollback: previous port forwards of sys-net", "write sys-net /rw/config/qubes-firewall-user-script",
                "run sys-firewall rollback: previous port forwards of sys-firewall", "write sys-firewall /rw/config/qubes-firewall-user-script",
                "run work rollback: previous port forwards of work", "write work /rw/config/rc.local",
                "set-feature work qubesfirewall.forward.tcp.443=target=443 type=external allow=192.168.1.0/24",
            ], _backend.Calls);
        // What the rollback ran in sys-net loads the old source network again.
        Assert.Contains("192.168.1.0/24", System.IO.File.ReadAllText(Path.Combine(_root.Path, "qubesfirewall-state", "sys-net", "last-run.sh")));
    }

    [Fact]
    public void A_failing_rollback_is_reported_as_needing_attention()
    {
        // sys-firewall fails, and deleting the rc.local the plan created in work fails too
        _backend.FailRunIn = "sys-firewall";
        var plan = PortForwardPlanner.PlanAdd(_backend, Web(), Options);
        var progress = new List<DeploymentProgress>();
        var partial = PortForwardPlanner.Apply(new FailingRollbackBackend(_backend, "work"), plan, new RolloutOptions { Progress = progress.Add });
        Assert.Equal("PortForwardPartiallyApplied", partial.Failure!.ErrorId);
        Assert.Equal([PortForwardHopStatus.RollbackFailed, PortForwardHopStatus.Failed, PortForwardHopStatus.NotReached], partial.Hops.Select(h => h.Status));
        Assert.True(partial.Failure.Message.Contains("Could NOT be put back (check these by hand): /rw/config/rc.local of work: ", StringComparison.Ordinal), partial.Failure.Message);
        Assert.Contains("Read-only file system", partial.Failure.Message);
        Assert.DoesNotContain("Nothing is left changed", partial.Failure.Message);
        Assert.Equal(["sys-firewall", "sys-firewall", "work", "work", "work"], progress.Where(p => p.RollingBack).Select(p => p.Hop));
        // the rest was put back: the feature is gone, sys-firewall has no file
        Assert.Empty(PortForwardPlanner.List(_root.Backend.GetInventory(), _root.Now));
        Assert.Null(File("sys-firewall", ForwardPersistence.FirewallUserScript));
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
        Assert.Null(File("untrusted", ForwardPersistence.RcLocal));
        Assert.Null(_root.Backend.ReadDom0File(QrexecPolicy.FilePath));
    }

    [Fact]
    public void Under_the_root_lock_a_plan_is_made_again_so_a_forward_added_meanwhile_is_kept()
    {
        // Two writers plan at the same time (both read sys-net's file without the other's forward).
        var first = PortForwardPlanner.PlanAdd(_root.Backend, PortForward.Create("work", ForwardProtocol.Tcp, 8001, allowFrom: ["10.0.0.0/8"]), Options);
        var secondForward = PortForward.Create("untrusted", ForwardProtocol.Tcp, 8002, allowFrom: ["10.0.0.0/8"]);
        var second = PortForwardPlanner.PlanAdd(_root.Backend, secondForward, Options);
        Assert.Null(PortForwardPlanner.Apply(_root.Backend, first).Failure);

        // Without a new plan the second would overwrite sys-net's block: the check before writing stops it and puts it back.
        var stale = PortForwardPlanner.Apply(_root.Backend, second);
        Assert.Equal("PortForwardRolledBack", stale.Failure!.ErrorId);
        Assert.Contains("changed since it was read for this plan", stale.Failure.Message);
        Assert.Contains("dport 8001", File("sys-net", ForwardPersistence.FirewallUserScript));
        Assert.DoesNotContain("dport 8002", File("sys-net", ForwardPersistence.FirewallUserScript));

        // With the plan made again under the lock, both are there.
        var fresh = PortForwardPlanner.Apply(_root.Backend, second, replan: () => PortForwardPlanner.PlanAdd(_root.Backend, secondForward, Options));
        Assert.Null(fresh.Failure);
        var script = File("sys-net", ForwardPersistence.FirewallUserScript)!;
        Assert.Contains("dport 8001", script);
        Assert.Contains("dport 8002", script);
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
        var sysNet = File("sys-net", ForwardPersistence.FirewallUserScript)!;
        var sysFirewall = File("sys-firewall", ForwardPersistence.FirewallUserScript)!;
        for (var i = 0; i < Writers; i++)
        {
            Assert.Contains($"tcp dport {9000 + i} dnat", sysNet);
            Assert.Contains($"tcp dport {9000 + i} dnat", sysFirewall);
        }
    }
}

/// <summary>A backend whose writes into one qube fail once a rollback has begun (after the first failed run).</summary>
internal sealed class FailingRollbackBackend(FaultyBackend inner, string qube) : IQubesBackend
{
    private bool _rollingBack;

    public string Description => inner.Description;
    public QubesInventory GetInventory() => inner.GetInventory();
    public FirewallDocument GetFirewall(string vmName) => inner.GetFirewall(vmName);
    public FirewallEditOutcome ApplyFirewallEdit(string vmName, FirewallEdit edit, FirewallDocument snapshot) => inner.ApplyFirewallEdit(vmName, edit, snapshot);
    public IReadOnlyList<QubesDbEntry> SyncFirewall(string vmName) => inner.SyncFirewall(vmName);
    public void SetFeature(string vmName, string name, string value) => inner.SetFeature(vmName, name, value);
    public bool RemoveFeature(string vmName, string name) => inner.RemoveFeature(vmName, name);
    public string? ReadQubeFile(string vmName, string path) => inner.ReadQubeFile(vmName, path);

    public void WriteQubeFile(string vmName, string path, string content, UnixFileMode mode)
    {
        if (_rollingBack && vmName == qube) throw new IOException($"No space left on device ({vmName}:{path})");
        inner.WriteQubeFile(vmName, path, content, mode);
    }

    public void DeleteQubeFile(string vmName, string path)
    {
        if (_rollingBack && vmName == qube) throw new IOException($"Read-only file system ({vmName}:{path})");
        inner.DeleteQubeFile(vmName, path);
    }

    public QubeCommandResult RunQubeScript(string vmName, string path) => inner.RunQubeScript(vmName, path);

    public QubeCommandResult RunQubeShellScript(string vmName, string script, string description)
    {
        var result = inner.RunQubeShellScript(vmName, script, description);
        if (!result.Succeeded) _rollingBack = true;
        return result;
    }

    public void StartQube(string vmName) => inner.StartQube(vmName);
    public void SetProperty(string vmName, string name, string value) => inner.SetProperty(vmName, name, value);
    public void ResetProperty(string vmName, string name) => inner.ResetProperty(vmName, name);
    public IDisposable? LockDeployments() => inner.LockDeployments();
    public IReadOnlyList<string> ListDom0Files(string directory) => inner.ListDom0Files(directory);
    public string? ReadDom0File(string path) => inner.ReadDom0File(path);
    public void WriteDom0File(string path, string content, UnixFileMode mode) => inner.WriteDom0File(path, content, mode);
    public bool DeleteDom0File(string path) => inner.DeleteDom0File(path);
    public void Dispose() => inner.Dispose();
}
