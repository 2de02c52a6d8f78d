using QubesFirewall.Engine.Deployment;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Persistence;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.Engine.Tests;

/// <summary>Plans and offline apply: steps and their order, files, features, conflicts, hazards, idempotence.</summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class PortForwardPlannerTests : IDisposable
{
    private readonly TempRoot _root = new(QubesXmlBuilder.Standard().Build());

    public void Dispose() => _root.Dispose();

    private DeploymentOptions Options(bool force = false) => DeploymentOptions.For(_root.Backend, _root.Now, force);

    private PortForwardPlan Add(PortForward f, bool force = false)
    {
        var plan = PortForwardPlanner.PlanAdd(_root.Backend, f, Options(force));
        var result = PortForwardPlanner.Apply(_root.Backend, plan);
        Assert.Null(result.Failure);
        return plan;
    }

    private PortForwardPlan Remove(string vm, ForwardProtocol p, int port)
    {
        var plan = PortForwardPlanner.PlanRemove(_root.Backend, vm, p, port, Options());
        Assert.Null(PortForwardPlanner.Apply(_root.Backend, plan).Failure);
        return plan;
    }

    private string? File(string qube, string path) => _root.Backend.ReadQubeFile(qube, path);

    private static PortForward Web(string vm = "work", int port = 443, int? target = null, string[]? allow = null, ForwardType type = ForwardType.External) =>
        PortForward.Create(vm, ForwardProtocol.Tcp, port, target, type, allow ?? ["192.168.1.0/24"]);

    [Fact]
    public void Adding_sets_the_feature_first_then_opens_from_the_target_out_to_the_edge()
    {
        var plan = PortForwardPlanner.PlanAdd(_root.Backend, Web(target: 8443), Options());
        Assert.Equal("Add", plan.Operation);
        Assert.Equal(["sys-net", "sys-firewall"], plan.Hops);
        Assert.Equal("tcp/443 -> work:8443 (sys-net -> sys-firewall -> work)", plan.Target);
        Assert.Equal(
            [
                (DeploymentStepKind.SetFeature, "work"),
                (DeploymentStepKind.WriteFile, "work"), (DeploymentStepKind.RunScript, "work"),
                (DeploymentStepKind.WriteFile, "sys-firewall"), (DeploymentStepKind.RunScript, "sys-firewall"),
                (DeploymentStepKind.WriteFile, "sys-net"), (DeploymentStepKind.RunScript, "sys-net"),
            ],
            plan.Steps.Select(s => (s.Kind, s.VMName)));
        Assert.Equal(["/rw/config/rc.local", "/rw/config/qubes-firewall-user-script", "/rw/config/qubes-firewall-user-script"],
            plan.Steps.Where(s => s.Kind == DeploymentStepKind.WriteFile).Select(s => s.Path));
        // without the agent in the qubes, the change goes into hook files, and the warning names the qubes and the install command
        var warning = Assert.Single(plan.Warnings);
        Assert.StartsWith("QubeFirewallAgentMissing: sys-net, sys-firewall, work have no QubesFirewall agent", warning, StringComparison.Ordinal);
        Assert.Contains("Install-QubeFirewallAgent -VMName sys-net, sys-firewall, work", warning, StringComparison.Ordinal);

        var text = plan.Describe();
        Assert.StartsWith("Add port forward tcp/443 -> work:8443 (sys-net -> sys-firewall -> work):", text);
        Assert.Contains("1. work: set feature qubesfirewall.forward.tcp.443 = 'target=8443 type=external allow=192.168.1.0/24'", text);
        Assert.Contains("sys-net: write /rw/config/qubes-firewall-user-script: create it (#!/bin/sh, mode 0755) with the managed block", text);
        Assert.Contains("add rule ip qubes qubesfw-dnat iifname != \"vif*\" iifname != \"lo\" fib daddr type local ip saddr 192.168.1.0/24 tcp dport 443 dnat to 10.137.0.3", text);
    }

    [Fact]
    public void Applying_offline_writes_the_feature_the_files_and_records_the_runs()
    {
        Add(Web(target: 8443));
        var work = _root.Backend.GetInventory().Get("work");
        Assert.Equal("target=8443 type=external allow=192.168.1.0/24", work.Features["qubesfirewall.forward.tcp.443"]);

        var sysNet = File("sys-net", ForwardPersistence.FirewallUserScript)!;
        Assert.StartsWith("#!/bin/sh\n" + ManagedBlock.BeginMarker + "\n", sysNet);
        Assert.EndsWith(ManagedBlock.EndMarker + "\n", sysNet);
        Assert.Equal(ManagedBlock.FileMode, System.IO.File.GetUnixFileMode(_root.StateFile("sys-net", ForwardPersistence.FirewallUserScript)));
        Assert.Contains("target: tcp/443 -> work:8443", File("work", ForwardPersistence.RcLocal));
        Assert.Null(File("personal", ForwardPersistence.RcLocal));

        var log = System.IO.File.ReadAllLines(System.IO.Path.Combine(_root.Backend.StatePath, "sys-net", "applied.log"));
        Assert.Matches("script sha256:[0-9a-f]{64} port forwards of sys-net$", Assert.Single(log));
        Assert.Equal(PortForwardPlanner.Export(_root.Backend.GetInventory(), "sys-net")!.Script,
            System.IO.File.ReadAllText(System.IO.Path.Combine(_root.Backend.StatePath, "sys-net", "last-run.sh")));
    }

    [Fact]
    public void Results_per_hop_say_what_was_done()
    {
        var plan = PortForwardPlanner.PlanAdd(_root.Backend, Web(), Options());
        var result = PortForwardPlanner.Apply(_root.Backend, plan);
        Assert.Equal(["work", "sys-firewall", "sys-net"], result.Hops.Select(h => h.VMName));
        Assert.Equal(["target", "hop 2 of 2", "hop 1 of 2"], result.Hops.Select(h => h.Role));
        Assert.All(result.Hops, h => Assert.Equal((PortForwardHopStatus.Recorded, true, false, 1), (h.Status, h.FileChanged, h.Executed, h.Forwards)));
    }

    [Fact]
    public void Planning_twice_gives_the_same_plan_and_reapplying_writes_nothing()
    {
        var first = PortForwardPlanner.PlanAdd(_root.Backend, Web(), Options());
        var second = PortForwardPlanner.PlanAdd(_root.Backend, Web(), Options());
        Assert.Equal(first.Describe(), second.Describe());
        Assert.Equal(first.Steps.Select(s => s.Content ?? s.Script), second.Steps.Select(s => s.Content ?? s.Script));

        PortForwardPlanner.Apply(_root.Backend, first);
        var files = Snapshot();
        var again = PortForwardPlanner.PlanAdd(_root.Backend, Web(), Options());
        Assert.Equal("Reapply", again.Operation);
        Assert.All(again.Steps, s => Assert.Equal(DeploymentStepKind.RunScript, s.Kind)); // the rules are re-applied, nothing is written
        PortForwardPlanner.Apply(_root.Backend, again);
        Assert.Equal(files, Snapshot());
    }

    private Dictionary<string, string> Snapshot() =>
        Directory.EnumerateFiles(_root.Path, "*", SearchOption.AllDirectories)
            .Where(f => !f.EndsWith(".lock", StringComparison.Ordinal) && !f.EndsWith("applied.log", StringComparison.Ordinal))
            .ToDictionary(f => f, System.IO.File.ReadAllText);

    [Fact]
    public void Changing_a_forward_updates_its_feature_and_every_hop()
    {
        Add(Web());
        var plan = Add(Web(allow: ["10.0.0.0/8"]));
        Assert.Equal("Update", plan.Operation);
        Assert.Contains("change feature qubesfirewall.forward.tcp.443 = 'target=443 type=external allow=10.0.0.0/8'", plan.Describe());
        Assert.Contains("ip saddr 10.0.0.0/8", File("sys-net", ForwardPersistence.FirewallUserScript));
        Assert.DoesNotContain("192.168.1.0/24", File("sys-net", ForwardPersistence.FirewallUserScript));

        // external -> internal: sys-net, no longer on the way, is emptied as well
        var internalPlan = Add(Web(type: ForwardType.Internal, allow: ["10.137.0.10/32"]));
        Assert.Equal(["work", "sys-firewall", "sys-net"], internalPlan.Steps.Where(s => s.Kind == DeploymentStepKind.RunScript).Select(s => s.VMName));
        Assert.Equal("#!/bin/sh\n", File("sys-net", ForwardPersistence.FirewallUserScript));
        Assert.Contains("iifgroup 2 ip daddr 10.137.0.3 ip saddr 10.137.0.10 tcp dport 443 dnat to 10.137.0.11", File("sys-firewall", ForwardPersistence.FirewallUserScript));
    }

    [Fact]
    public void Two_forwards_share_a_hop_and_removing_one_keeps_the_other()
    {
        Add(Web());
        Add(PortForward.Create("personal", ForwardProtocol.Udp, 51820));
        var sysNet = File("sys-net", ForwardPersistence.FirewallUserScript)!;
        Assert.Contains("tcp dport 443 dnat to 10.137.0.3", sysNet);
        Assert.Contains("udp dport 51820 dnat to 10.137.0.3", sysNet);
        Assert.Contains("tcp/443 to work", sysNet);
        Assert.Contains("udp/51820 to personal", sysNet);

        var plan = Remove("work", ForwardProtocol.Tcp, 443);
        Assert.Equal("Remove", plan.Operation);
        // outside in: sys-net first, the target, then the feature last
        Assert.Equal([(DeploymentStepKind.WriteFile, "sys-net"), (DeploymentStepKind.RunScript, "sys-net"),
            (DeploymentStepKind.WriteFile, "sys-firewall"), (DeploymentStepKind.RunScript, "sys-firewall"),
            (DeploymentStepKind.WriteFile, "work"), (DeploymentStepKind.RunScript, "work"), (DeploymentStepKind.RemoveFeature, "work")],
            plan.Steps.Select(s => (s.Kind, s.VMName)));
        sysNet = File("sys-net", ForwardPersistence.FirewallUserScript)!;
        Assert.DoesNotContain("tcp dport 443", sysNet);
        Assert.Contains("udp dport 51820 dnat to 10.137.0.3", sysNet);
        Assert.Equal("#!/bin/sh\n", File("work", ForwardPersistence.RcLocal));
        Assert.DoesNotContain("qubesfirewall.forward.tcp.443", _root.Backend.GetInventory().Get("work").Features.Keys);

        Remove("personal", ForwardProtocol.Udp, 51820);
        Assert.Equal("#!/bin/sh\n", File("sys-net", ForwardPersistence.FirewallUserScript));
        Assert.Empty(PortForwardPlanner.List(_root.Backend.GetInventory(), _root.Now));
    }

    [Fact]
    public void The_users_own_lines_stay_byte_for_byte()
    {
        const string user = "#!/bin/bash\n# my rules\nnft add rule ip qubes custom-input tcp dport 22 accept\necho done > /tmp/x\n";
        _root.Backend.WriteQubeFile("sys-net", ForwardPersistence.FirewallUserScript, user, ManagedBlock.FileMode);
        const string rc = "#!/bin/sh\nmount /dev/xvdi /mnt\nexit 0\n";
        _root.Backend.WriteQubeFile("work", ForwardPersistence.RcLocal, rc, ManagedBlock.FileMode);

        var plan = Add(Web());
        Assert.Contains("sys-net: write /rw/config/qubes-firewall-user-script: add the managed block (mode 0755)", plan.Describe());
        var sysNet = File("sys-net", ForwardPersistence.FirewallUserScript)!;
        Assert.StartsWith(user + ManagedBlock.BeginMarker, sysNet);
        var work = File("work", ForwardPersistence.RcLocal)!;
        Assert.StartsWith("#!/bin/sh\nmount /dev/xvdi /mnt\n" + ManagedBlock.BeginMarker, work);
        Assert.EndsWith(ManagedBlock.EndMarker + "\nexit 0\n", work); // in front of the final exit, where it still runs

        Add(PortForward.Create("work", ForwardProtocol.Tcp, 8080, allowFrom: ["10.0.0.0/8"]));
        Assert.Single(File("sys-net", ForwardPersistence.FirewallUserScript)!.Split('\n'), l => l == ManagedBlock.BeginMarker);

        Remove("work", ForwardProtocol.Tcp, 443);
        Remove("work", ForwardProtocol.Tcp, 8080);
        Assert.Equal(user, File("sys-net", ForwardPersistence.FirewallUserScript));
        Assert.Equal(rc, File("work", ForwardPersistence.RcLocal));
    }

    [Fact]
    public void A_user_script_without_interpreter_line_is_reported()
    {
        _root.Backend.WriteQubeFile("sys-net", ForwardPersistence.FirewallUserScript, "nft list ruleset > /tmp/r\n", ManagedBlock.FileMode);
        var plan = PortForwardPlanner.PlanAdd(_root.Backend, Web(), Options());
        Assert.Contains(plan.Warnings, w => w.Contains("has no '#!' first line", StringComparison.Ordinal));
    }

    [Fact]
    public void A_damaged_block_is_refused_and_nothing_is_written()
    {
        _root.Backend.WriteQubeFile("sys-net", ForwardPersistence.FirewallUserScript, "#!/bin/sh\n" + ManagedBlock.BeginMarker + "\nnft flush ruleset\n", ManagedBlock.FileMode);
        var ex = Assert.Throws<QubesFirewallException>(() => PortForwardPlanner.PlanAdd(_root.Backend, Web(), Options()));
        Assert.Equal("ManagedBlockDamaged", ex.ErrorId);
        Assert.StartsWith("sys-net:/rw/config/qubes-firewall-user-script:", ex.Message);
        Assert.Empty(_root.Backend.GetInventory().Get("work").Features);
    }

    [Fact]
    public void The_same_port_through_a_shared_hop_is_refused_but_allowed_where_the_hops_differ()
    {
        Add(Web());
        var ex = Assert.Throws<QubesFirewallException>(() => PortForwardPlanner.PlanAdd(_root.Backend, Web("personal"), Options()));
        Assert.Equal("PortAlreadyForwarded", ex.ErrorId);
        Assert.Contains("'work'", ex.Message);
        Assert.Contains("sys-net, sys-firewall", ex.Message);
        Assert.Contains("Remove-QubePortForward -VMName work -Port 443 -Protocol Tcp", ex.Message);
        Assert.Equal("PortAlreadyForwarded", Assert.Throws<QubesFirewallException>(() =>
            PortForwardPlanner.PlanAdd(_root.Backend, Web("personal", type: ForwardType.Internal), Options())).ErrorId);

        // another protocol, another port, or an internal forward on another network qube: fine
        PortForwardPlanner.PlanAdd(_root.Backend, PortForward.Create("personal", ForwardProtocol.Udp, 443), Options());
        PortForwardPlanner.PlanAdd(_root.Backend, Web("personal", port: 444, target: 443), Options());
        PortForwardPlanner.PlanAdd(_root.Backend, Web("vpn-app", type: ForwardType.Internal), Options());
    }

    [Fact]
    public void A_long_external_chain_warns_about_vpn_routing()
    {
        var plan = PortForwardPlanner.PlanAdd(_root.Backend, Web("vpn-app"), Options());
        Assert.Equal(["sys-net", "sys-firewall", "sys-vpn"], plan.Hops);
        Assert.Contains(plan.Warnings, w => w.Contains("VPN tunnel", StringComparison.Ordinal) && w.Contains("sys-firewall", StringComparison.Ordinal));
    }

    [Fact]
    public void Ipv6_sources_without_ipv6_on_the_chain_and_a_past_expiry_are_refused()
    {
        Assert.Equal("IPv6NotEnabled", Assert.Throws<QubesFirewallException>(() =>
            PortForwardPlanner.PlanAdd(_root.Backend, Web(allow: ["2001:db8::/32"]), Options())).ErrorId);
        Assert.Equal("ExpireInPast", Assert.Throws<QubesFirewallException>(() =>
            PortForwardPlanner.PlanAdd(_root.Backend, PortForward.Create("work", ForwardProtocol.Tcp, 80, expire: _root.Now.ToUnixTimeSeconds() - 1), Options())).ErrorId);
    }

    [Fact]
    public void Removing_what_is_not_declared_is_an_error_but_hand_written_features_can_be_removed()
    {
        Assert.Equal("PortForwardNotFound", Assert.Throws<QubesFirewallException>(() =>
            PortForwardPlanner.PlanRemove(_root.Backend, "work", ForwardProtocol.Tcp, 443, Options())).ErrorId);

        _root.Backend.SetFeature("work", "qubesfirewall.forward.tcp.0443", "target=443 type=external");
        _root.Backend.SetFeature("work", "qubesfirewall.forward.udp.53", "target=53 type=nonsense");
        var listed = PortForwardPlanner.List(_root.Backend.GetInventory(), _root.Now);
        Assert.All(listed, f => Assert.False(f.IsValid));
        Assert.Equal([443, 53], listed.Select(f => f.Port!.Value));

        // an invalid declaration is ignored by the scripts, with a warning
        var other = PortForwardPlanner.PlanAdd(_root.Backend, Web("personal", 8080), Options());
        Assert.Contains(other.Warnings, w => w.Contains("qubesfirewall.forward.udp.53", StringComparison.Ordinal) && w.Contains("ignored", StringComparison.Ordinal));

        var plan = Remove("work", ForwardProtocol.Tcp, 443);
        Assert.Contains("remove feature qubesfirewall.forward.tcp.0443", plan.Describe());
        Remove("work", ForwardProtocol.Udp, 53);
        Assert.Empty(_root.Backend.GetInventory().Get("work").Features);
    }

    [Fact]
    public void A_forward_of_a_qube_that_lost_its_network_can_still_be_removed()
    {
        Add(Web());
        _root.Backend.SetProperty("work", "netvm", "");
        var listed = Assert.Single(PortForwardPlanner.List(_root.Backend.GetInventory(), _root.Now));
        Assert.Empty(listed.Hops);
        Assert.Contains("no network qube", listed.Problem);
        var plan = Remove("work", ForwardProtocol.Tcp, 443);
        Assert.Contains(plan.Warnings, w => w.Contains("cannot be resolved now", StringComparison.Ordinal));
        Assert.Empty(_root.Backend.GetInventory().Get("work").Features);
        Assert.Equal("#!/bin/sh\n", File("work", ForwardPersistence.RcLocal));
    }

    [Fact]
    public void A_failure_half_way_puts_everything_back_feature_included_and_says_so()
    {
        // sys-firewall's hook file cannot be written (a directory is in the way)
        Directory.CreateDirectory(_root.StateFile("sys-firewall", ForwardPersistence.FirewallUserScript));
        var plan = PortForwardPlanner.PlanAdd(_root.Backend, Web(), Options());
        var result = PortForwardPlanner.Apply(_root.Backend, plan);
        Assert.NotNull(result.Failure);
        Assert.Equal("PortForwardRolledBack", result.Failure!.ErrorId);
        Assert.Contains("failed at \"sys-firewall: write /rw/config/qubes-firewall-user-script", result.Failure.Message);
        Assert.Contains("Rolled back: feature qubesfirewall.forward.tcp.443 of work; /rw/config/rc.local of work; the rules running in work.", result.Failure.Message);
        Assert.Contains("Nothing is left changed.", result.Failure.Message);
        Assert.Equal([PortForwardHopStatus.RolledBack, PortForwardHopStatus.Failed, PortForwardHopStatus.NotReached], result.Hops.Select(h => h.Status));
        Assert.Same(result.Hops, result.Failure.Target);
        // Declarations and qubes agree again: no feature, the file work did not have is gone, the edge was never opened.
        Assert.DoesNotContain(_root.Backend.GetInventory().Get("work").Features.Keys, k => k.StartsWith("qubesfirewall.", StringComparison.Ordinal));
        Assert.Null(File("work", ForwardPersistence.RcLocal));
        Assert.Null(File("sys-net", ForwardPersistence.FirewallUserScript));
        Assert.Empty(PortForwardPlanner.List(_root.Backend.GetInventory(), _root.Now));
        // work's rules were loaded, then its previous (empty) set was loaded again: two recorded runs.
        Assert.Equal(2, System.IO.File.ReadAllLines(Path.Combine(_root.Path, "qubesfirewall-state", "work", "applied.log")).Length);
    }

    [Fact]
    public void Live_planning_names_every_qube_to_reach_that_is_not_running_outermost_first()
    {
        var live = new DeploymentOptions { Now = _root.Now, RequireRunning = true };
        foreach (var q in new[] { "sys-net", "work" }) _root.Backend.SetPowerState(q, PowerState.Running);
        var blocked = PortForwardPlanner.PlanAdd(_root.Backend, Web(), live);
        Assert.False(blocked.IsComplete);
        Assert.Empty(blocked.Steps);
        Assert.Equal(["sys-firewall"], blocked.NotRunning.Select(q => q.Name));
        Assert.Contains("first start sys-firewall (-Start)", blocked.Describe());
        var ex = Assert.Throws<QubesFirewallException>(() => PortForwardPlanner.Apply(_root.Backend, blocked));
        Assert.Equal("QubesNotRunning", ex.ErrorId);
        Assert.Contains("sys-firewall (halted)", ex.Message);

        // the target too: its rc.local is read and written inside it
        _root.Backend.SetPowerState("work", PowerState.Halted);
        _root.Backend.SetPowerState("sys-net", PowerState.Halted);
        Assert.Equal(["sys-net", "sys-firewall", "work"], PortForwardPlanner.PlanAdd(_root.Backend, Web(), live).NotRunning.Select(q => q.Name));

        foreach (var q in new[] { "sys-net", "sys-firewall", "work" }) _root.Backend.SetPowerState(q, PowerState.Running);
        var plan = PortForwardPlanner.PlanAdd(_root.Backend, Web(), live);
        Assert.True(plan.IsComplete);
        Assert.Equal(["work", "sys-firewall", "sys-net"], plan.Steps.Where(s => s.Kind == DeploymentStepKind.RunScript).Select(s => s.VMName));
    }

    [Fact]
    public void Custom_persist_is_warned_about()
    {
        using var root = new TempRoot(new QubesXmlBuilder()
            .Qube("sys-net", 2, null, providesNetwork: true, features: new Dictionary<string, string> { ["service.custom-persist"] = "1" })
            .Qube("app", 3, "sys-net").Build());
        var plan = PortForwardPlanner.PlanAdd(root.Backend, PortForward.Create("app", ForwardProtocol.Tcp, 80, allowFrom: ["10.0.0.0/8"]), DeploymentOptions.For(root.Backend, root.Now));
        Assert.Contains(plan.Warnings, w => w.Contains("custom-persist", StringComparison.Ordinal) && w.StartsWith("'sys-net'", StringComparison.Ordinal));
    }

    [Fact]
    public void A_network_qube_without_the_firewall_service_keeps_its_part_in_rc_local()
    {
        using var root = new TempRoot(new QubesXmlBuilder()
            .Qube("sys-net", 2, null, providesNetwork: true)
            .Qube("sys-vpn", 3, "sys-net", providesNetwork: true, features: new Dictionary<string, string> { ["service.qubes-firewall"] = "" })
            .Qube("app", 4, "sys-vpn").Build());
        var plan = PortForwardPlanner.PlanAdd(root.Backend, PortForward.Create("app", ForwardProtocol.Tcp, 80, allowFrom: ["10.0.0.0/8"]), DeploymentOptions.For(root.Backend, root.Now));
        Assert.Equal([("app", "/rw/config/rc.local"), ("sys-vpn", "/rw/config/rc.local"), ("sys-net", "/rw/config/qubes-firewall-user-script")],
            plan.Steps.Where(s => s.Kind == DeploymentStepKind.WriteFile).Select(s => (s.VMName, s.Path!)));
    }

    [Fact]
    public void Export_gives_the_managed_block_of_a_qube_or_nothing()
    {
        Add(Web());
        var inv = _root.Backend.GetInventory();
        var script = PortForwardPlanner.Export(inv, "sys-net")!;
        Assert.Equal(("sys-net", "sys-net", ForwardPersistence.FirewallUserScript, 1), (script.VMName, script.StoredIn, script.Path, script.Forwards));
        Assert.Equal(ManagedBlock.Extract(File("sys-net", ForwardPersistence.FirewallUserScript)), script.Script);
        Assert.Null(PortForwardPlanner.Export(inv, "personal"));
        Assert.Null(PortForwardPlanner.Export(inv, "vault"));
    }

    [Fact]
    public void List_shows_hops_expiry_and_problems()
    {
        Add(PortForward.Create("work", ForwardProtocol.Tcp, 443, expire: _root.Now.ToUnixTimeSeconds() + 60, allowFrom: ["10.0.0.0/8"], comment: "short"));
        Add(PortForward.Create("personal", ForwardProtocol.Udp, 53, type: ForwardType.Internal));
        _root.Now += TimeSpan.FromMinutes(2);
        var list = PortForwardPlanner.List(_root.Backend.GetInventory(), _root.Now);
        var work = list.Single(f => f.VMName == "work");
        Assert.True(work.IsExpired);
        Assert.Equal(["sys-net", "sys-firewall"], work.Hops);
        Assert.Equal("sys-net -> sys-firewall -> work", work.Path);
        Assert.Equal(["10.0.0.0/8"], work.AllowFrom);
        Assert.Equal(("short", ForwardType.External, 443, 443), (work.Comment, work.Type!.Value, work.Port!.Value, work.TargetPort!.Value));
        var personal = list.Single(f => f.VMName == "personal");
        Assert.False(personal.IsExpired);
        Assert.Equal(["sys-firewall"], personal.Hops);
        Assert.Empty(personal.AllowFrom);
    }
}
