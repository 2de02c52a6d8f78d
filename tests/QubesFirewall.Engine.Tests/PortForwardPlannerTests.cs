using QubesFirewall.Engine.Agent;
using QubesFirewall.Engine.Deployment;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Persistence;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.Engine.Tests;

/// <summary>Plans and offline apply: steps and their order, the declaration and the derived agent keys, conflicts, hazards, idempotence.</summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class PortForwardPlannerTests : IDisposable
{
    private readonly TempRoot _root = new(QubesXmlBuilder.Standard().Build());

    public void Dispose() => _root.Dispose();

    private DeploymentOptions Options() => DeploymentOptions.For(_root.Backend, _root.Now);

    private PortForwardPlan Add(PortForward f)
    {
        var plan = PortForwardPlanner.PlanAdd(_root.Backend, f, Options());
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

    /// <summary>The agent keys a qube carries (<c>vm-config.qubesfw.*</c>), gen included.</summary>
    private Dictionary<string, string> Keys(string qube) =>
        _root.Backend.GetInventory().Get(qube).Features.Where(f => AgentFeatures.IsAgentFeature(f.Key)).ToDictionary(f => f.Key, f => f.Value);

    /// <summary>A qube's data keys (gen aside), their values in order.</summary>
    private List<string> Parts(string qube) =>
        Keys(qube).Where(k => k.Key != AgentFeatures.GenFeature).OrderBy(k => k.Key, StringComparer.Ordinal).Select(k => k.Value).ToList();

    /// <summary>Every qube carries exactly what the declarations derive: the keys and their gen agree.</summary>
    private void AssertKeysMatchDeclarations()
    {
        var inventory = _root.Backend.GetInventory();
        Assert.Empty(AgentFeatures.Changes(inventory, AgentFeatures.DeriveAll(inventory)));
    }

    private static PortForward Web(string vm = "work", int port = 443, int? target = null, string[]? allow = null, ForwardType type = ForwardType.External) =>
        PortForward.Create(vm, ForwardProtocol.Tcp, port, target, type, allow ?? ["192.168.1.0/24"]);

    [Fact]
    public void Adding_sets_the_declaration_first_then_the_keys_of_every_qube_on_the_way_each_gen_last()
    {
        var plan = PortForwardPlanner.PlanAdd(_root.Backend, Web(target: 8443), Options());
        Assert.Equal(PlanOperation.Add, plan.Operation);
        Assert.Equal(["sys-net", "sys-firewall"], plan.Hops);
        Assert.Equal("tcp/443 -> work:8443 (sys-net -> sys-firewall -> work)", plan.Target);
        Assert.True(plan.ViaAgent);
        // only feature calls in dom0: the declaration, then a data key and gen for each of the three qubes
        Assert.All(plan.Steps, s => Assert.Equal(DeploymentStepKind.SetFeature, s.Kind));
        Assert.Equal(("work", "qubesfirewall.forward.tcp.443"), (plan.Steps[0].VMName, plan.Steps[0].FeatureName));
        Assert.Equal(7, plan.Steps.Count);
        foreach (var qube in new[] { "sys-net", "sys-firewall", "work" })
        {
            var mine = plan.Steps.Skip(1).Where(s => s.VMName == qube).Select(s => s.FeatureName!).ToList();
            Assert.Equal(2, mine.Count);
            Assert.Equal(AgentFeatures.GenFeature, mine[^1]);
        }
        Assert.Equal(["sys-firewall", "sys-net", "work"], plan.AgentGenerations.Keys.Order(StringComparer.Ordinal));
        Assert.Empty(plan.Warnings);

        var text = plan.Describe();
        Assert.StartsWith("Add port forward tcp/443 -> work:8443 (sys-net -> sys-firewall -> work):", text);
        Assert.Contains("1. work: set feature qubesfirewall.forward.tcp.443 = 'target=8443 type=external allow=192.168.1.0/24'", text);
        Assert.Contains("sys-net: set feature vm-config.qubesfw.hop4.", text);
        Assert.DoesNotContain("/rw/config", text);
    }

    [Fact]
    public void Qubes_on_the_way_without_the_agent_are_refused_by_name_with_the_install_command_and_nothing_changes()
    {
        foreach (var qube in new[] { "sys-net", "sys-firewall" }) _root.Backend.RemoveFeature(qube, AgentScript.VersionFeature);
        var before = _root.Backend.GetInventory().Qubes.ToDictionary(q => q.Name, q => q.Features.OrderBy(f => f.Key).ToList());
        var ex = Assert.Throws<QubesFirewallException>(() => PortForwardPlanner.PlanAdd(_root.Backend, Web(), Options()));
        Assert.Equal("QubeFirewallAgentMissing", ex.ErrorId);
        Assert.Contains("sys-net, sys-firewall have none", ex.Message);
        Assert.Contains("Install-QubeFirewallAgent -VMName sys-net, sys-firewall", ex.Message);
        Assert.EndsWith("Nothing was changed.", ex.Message);
        Assert.Equal(before, _root.Backend.GetInventory().Qubes.ToDictionary(q => q.Name, q => q.Features.OrderBy(f => f.Key).ToList()));
        Assert.Null(File("sys-net", HookFiles.FirewallUserScript));

        // removing a forward through a qube that lost its agent is refused the same way
        _root.Backend.SetFeature("sys-net", AgentScript.VersionFeature, AgentScript.Version);
        _root.Backend.SetFeature("sys-firewall", AgentScript.VersionFeature, AgentScript.Version);
        Add(Web());
        _root.Backend.RemoveFeature("sys-firewall", AgentScript.VersionFeature);
        var remove = Assert.Throws<QubesFirewallException>(() => PortForwardPlanner.PlanRemove(_root.Backend, "work", ForwardProtocol.Tcp, 443, Options()));
        Assert.Equal("QubeFirewallAgentMissing", remove.ErrorId);
        Assert.Contains("Install-QubeFirewallAgent -VMName sys-firewall", remove.Message);
        Assert.Single(PortForwardPlanner.List(_root.Backend.GetInventory(), _root.Now));
    }

    [Fact]
    public void Applying_offline_sets_the_declaration_and_the_keys_and_writes_nothing_into_any_qube()
    {
        Add(Web(target: 8443));
        var work = _root.Backend.GetInventory().Get("work");
        Assert.Equal("target=8443 type=external allow=192.168.1.0/24", work.Features["qubesfirewall.forward.tcp.443"]);

        // sys-net translates to sys-firewall, sys-firewall to work, work accepts on its own address
        var sysNet = Assert.Single(Parts("sys-net"));
        Assert.StartsWith(Keys("sys-net")[AgentFeatures.GenFeature][..32] + " ", sysNet); // "for=sys-net gen=<hash>", as its gen key
        Assert.StartsWith("for=sys-net gen=", sysNet);
        Assert.Contains(" proto=tcp port=443 to=443 ", sysNet);
        Assert.Contains(" nat=10.137.0.3 ", sysNet);
        Assert.Contains("192.168.1.0/24", sysNet);
        Assert.Contains(" nat=10.137.0.11 ", Assert.Single(Parts("sys-firewall")));
        Assert.Contains(" to=8443 dst=10.137.0.11", Assert.Single(Parts("work")));
        Assert.Empty(Keys("personal"));
        AssertKeysMatchDeclarations();

        // nothing written into a qube, nothing run
        foreach (var qube in new[] { "sys-net", "sys-firewall", "work" })
        {
            Assert.Null(File(qube, HookFiles.FirewallUserScript));
            Assert.Null(File(qube, HookFiles.RcLocal));
            Assert.False(System.IO.File.Exists(System.IO.Path.Combine(_root.Backend.StatePath, qube, "applied.log")));
        }
    }

    [Fact]
    public void Results_per_hop_say_what_was_done()
    {
        var plan = PortForwardPlanner.PlanAdd(_root.Backend, Web(), Options());
        var result = PortForwardPlanner.Apply(_root.Backend, plan);
        Assert.Equal(["sys-firewall", "sys-net", "work"], result.Hops.Select(h => h.VMName));
        Assert.Equal(["hop 2 of 2", "hop 1 of 2", "target"], result.Hops.Select(h => h.Role));
        Assert.All(result.Hops, h => Assert.Equal((PortForwardHopStatus.Recorded, false, false, 1), (h.Status, h.FileChanged, h.Executed, h.Forwards)));
        Assert.All(result.Hops, h => Assert.Equal($"generation {plan.AgentGenerations[h.VMName]}", h.Message));
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
        Assert.Equal(PlanOperation.Reapply, again.Operation);
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
        Assert.Equal(PlanOperation.Update, plan.Operation);
        Assert.Contains("change feature qubesfirewall.forward.tcp.443 = 'target=443 type=external allow=10.0.0.0/8'", plan.Describe());
        var sysNet = Assert.Single(Parts("sys-net"));
        Assert.Contains("10.0.0.0/8", sysNet);
        Assert.DoesNotContain("192.168.1.0/24", sysNet);
        AssertKeysMatchDeclarations();

        // external -> internal: sys-net, no longer on the way, loses its keys as well
        var internalPlan = Add(Web(type: ForwardType.Internal, allow: ["10.137.0.10/32"]));
        Assert.Equal(["sys-firewall", "sys-net", "work"], internalPlan.AgentGenerations.Keys.Order(StringComparer.Ordinal));
        Assert.Equal("none", internalPlan.AgentGenerations["sys-net"]);
        Assert.Empty(Keys("sys-net"));
        var sysFirewall = Assert.Single(Parts("sys-firewall"));
        Assert.Contains(" in=cl ", sysFirewall);
        Assert.Contains(" nat=10.137.0.11 dst=10.137.0.3 ", sysFirewall);
        Assert.Contains("10.137.0.10", sysFirewall);
        AssertKeysMatchDeclarations();
    }

    [Fact]
    public void Two_forwards_share_a_hop_and_removing_one_keeps_the_other()
    {
        Add(Web());
        Add(PortForward.Create("personal", ForwardProtocol.Udp, 51820));
        var sysNet = Parts("sys-net");
        Assert.Equal(2, sysNet.Count);
        Assert.Contains(sysNet, v => v.Contains(" proto=tcp port=443 ", StringComparison.Ordinal) && v.EndsWith(" vm=work", StringComparison.Ordinal));
        Assert.Contains(sysNet, v => v.Contains(" proto=udp port=51820 ", StringComparison.Ordinal) && v.EndsWith(" vm=personal", StringComparison.Ordinal));
        var udpKey = Keys("sys-net").Single(k => k.Value.Contains(" proto=udp ", StringComparison.Ordinal)).Key;

        var plan = Remove("work", ForwardProtocol.Tcp, 443);
        Assert.Equal(PlanOperation.Remove, plan.Operation);
        // only feature calls: the keys first, the declaration last
        Assert.All(plan.Steps, s => Assert.True(s.Kind is DeploymentStepKind.SetFeature or DeploymentStepKind.RemoveFeature, s.Description));
        Assert.Equal((DeploymentStepKind.RemoveFeature, "work", "qubesfirewall.forward.tcp.443"), (plan.Steps[^1].Kind, plan.Steps[^1].VMName, plan.Steps[^1].FeatureName));
        // the other forward's key stays; only the hash of the set it carries changes
        Assert.DoesNotContain(plan.Steps, s => s.FeatureName == udpKey && s.Kind == DeploymentStepKind.RemoveFeature);
        var left = Assert.Single(Parts("sys-net"));
        Assert.Contains(" proto=udp port=51820 ", left);
        Assert.Empty(Keys("work"));
        Assert.Equal("none", plan.AgentGenerations["work"]);
        Assert.DoesNotContain("qubesfirewall.forward.tcp.443", _root.Backend.GetInventory().Get("work").Features.Keys);
        AssertKeysMatchDeclarations();

        Remove("personal", ForwardProtocol.Udp, 51820);
        foreach (var qube in new[] { "sys-net", "sys-firewall", "work", "personal" }) Assert.Empty(Keys(qube));
        Assert.Empty(PortForwardPlanner.List(_root.Backend.GetInventory(), _root.Now));
    }

    [Fact]
    public void Hook_files_are_neither_read_nor_written_the_users_own_lines_and_a_damaged_block_stay_byte_for_byte()
    {
        const string user = "#!/bin/bash\n# my rules\nnft add rule ip qubes custom-input tcp dport 22 accept\necho done > /tmp/x\n";
        _root.Backend.WriteQubeFile("sys-net", HookFiles.FirewallUserScript, user, ManagedBlock.FileMode);
        const string rc = "#!/bin/sh\nmount /dev/xvdi /mnt\nexit 0\n";
        _root.Backend.WriteQubeFile("work", HookFiles.RcLocal, rc, ManagedBlock.FileMode);
        // a block an earlier version left damaged (its end marker lost): not this plan's business, Install-QubeFirewallAgent's
        var damaged = "#!/bin/sh\n" + ManagedBlock.BeginMarker + "\nnft flush ruleset\n";
        _root.Backend.WriteQubeFile("sys-firewall", HookFiles.FirewallUserScript, damaged, ManagedBlock.FileMode);

        var plan = Add(Web());
        Assert.DoesNotContain(plan.Steps, s => s.Path is not null);
        Add(PortForward.Create("work", ForwardProtocol.Tcp, 8080, allowFrom: ["10.0.0.0/8"]));
        Assert.Equal(2, Parts("sys-net").Count);
        Remove("work", ForwardProtocol.Tcp, 443);
        Remove("work", ForwardProtocol.Tcp, 8080);
        Assert.Equal(user, File("sys-net", HookFiles.FirewallUserScript));
        Assert.Equal(rc, File("work", HookFiles.RcLocal));
        Assert.Equal(damaged, File("sys-firewall", HookFiles.FirewallUserScript));
        Assert.Empty(Keys("sys-net"));
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
    public void A_forward_through_a_shared_hop_keeps_the_part_another_forward_gave_it_with_the_hops_new_gen()
    {
        Add(Web());
        var (key, value) = Assert.Single(Keys("sys-net"), k => k.Key != AgentFeatures.GenFeature);
        var oldGen = Gen(Keys("sys-net")[AgentFeatures.GenFeature]);
        Assert.Contains($"gen={oldGen} ", value);

        // the second forward's plan reads sys-net's keys (no other qube's declarations), keeps work's part and seals both again
        var personal = PortForward.Create("personal", ForwardProtocol.Tcp, 8080, allowFrom: ["10.0.0.0/8"]);
        var plan = Add(personal);
        var keys = Keys("sys-net");
        var newGen = Gen(keys[AgentFeatures.GenFeature]);
        Assert.NotEqual(oldGen, newGen);
        Assert.Equal($"for=sys-net gen={newGen} keys=2", keys[AgentFeatures.GenFeature]);
        Assert.Equal(value.Replace($"gen={oldGen} ", $"gen={newGen} ", StringComparison.Ordinal), keys[key]);
        Assert.EndsWith(" vm=personal", Assert.Single(keys, k => k.Key.Contains(".08080.tcp.", StringComparison.Ordinal)).Value);
        Assert.Equal(2, plan.ForwardCounts["sys-net"]);
        // the same set, byte for byte, as deriving every declaration of the root gives
        AssertKeysMatchDeclarations();
        // and again: nothing to send
        var again = PortForwardPlanner.PlanAdd(_root.Backend, personal, Options());
        Assert.Equal(PlanOperation.Reapply, again.Operation);
        Assert.Empty(again.Steps);

        // removing the first keeps the second's part, sealed again
        Remove("work", ForwardProtocol.Tcp, 443);
        Assert.DoesNotContain(key, Keys("sys-net").Keys);
        Assert.EndsWith(" vm=personal", Assert.Single(Parts("sys-net")));
        AssertKeysMatchDeclarations();
    }

    [Fact]
    public void A_hop_key_outside_the_agents_grammar_is_refused_by_name_and_nothing_is_written()
    {
        Add(Web());
        var key = Keys("sys-net").Keys.Single(k => k != AgentFeatures.GenFeature);
        _root.Backend.SetFeature("sys-net", key, Keys("sys-net")[key].Replace(" src=192.168.1.0/24 ", " src=192.168.1.0/24;reboot ", StringComparison.Ordinal));
        var before = new[] { "sys-net", "sys-firewall", "personal", "work" }.ToDictionary(q => q, q => _root.Backend.GetInventory().Get(q).Features.OrderBy(f => f.Key, StringComparer.Ordinal).ToList());

        var ex = Assert.Throws<QubesFirewallException>(() =>
            PortForwardPlanner.PlanAdd(_root.Backend, PortForward.Create("personal", ForwardProtocol.Tcp, 8080, allowFrom: ["10.0.0.0/8"]), Options()));
        Assert.Equal("InvalidAgentKey", ex.ErrorId);
        Assert.Contains($"The agent key {key} of 'sys-net' is not in the agent's grammar (src= must be any or addresses of the family)", ex.Message);
        Assert.Contains("Nothing was changed.", ex.Message);
        Assert.Contains($"qvm-features --unset sys-net {key}", ex.Message);
        foreach (var (qube, features) in before)
            Assert.Equal(features, _root.Backend.GetInventory().Get(qube).Features.OrderBy(f => f.Key, StringComparer.Ordinal).ToList());

        // a key naming another qube (qvm-clone copies features) is no other declaration's part: it goes with the change
        _root.Backend.SetFeature("sys-net", key, Keys("sys-firewall")[Keys("sys-firewall").Keys.Single(k => k != AgentFeatures.GenFeature)]);
        Add(PortForward.Create("personal", ForwardProtocol.Tcp, 8080, allowFrom: ["10.0.0.0/8"]));
        Assert.DoesNotContain(Keys("sys-net").Values, v => v.StartsWith("for=sys-firewall ", StringComparison.Ordinal));
    }

    private static string Gen(string value) => System.Text.RegularExpressions.Regex.Match(value, " gen=([0-9a-f]{16})").Groups[1].Value;

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

        // an invalid declaration is ignored by the scripts, with a warning when its qube's forwards are planned (a plan reads only
        // the qubes it touches: another qube's declarations are Get-QubePortForward's and Test-QubeFirewall's to show)
        var other = PortForwardPlanner.PlanAdd(_root.Backend, Web("work", 8080), Options());
        Assert.Contains(other.Warnings, w => w.Contains("qubesfirewall.forward.udp.53", StringComparison.Ordinal) && w.Contains("ignored", StringComparison.Ordinal));

        var plan = Remove("work", ForwardProtocol.Tcp, 443);
        Assert.Contains("remove feature qubesfirewall.forward.tcp.0443", plan.Describe());
        Remove("work", ForwardProtocol.Udp, 53);
        Assert.DoesNotContain(_root.Backend.GetInventory().Get("work").Features.Keys, k => k.StartsWith("qubesfirewall.forward.", StringComparison.Ordinal) || AgentFeatures.IsAgentFeature(k));
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
        Assert.DoesNotContain("qubesfirewall.forward.tcp.443", _root.Backend.GetInventory().Get("work").Features.Keys);
        // every key the forward gave, on its old way too, is gone: without a chain its parts are looked for by name on every qube
        foreach (var qube in new[] { "sys-net", "sys-firewall", "work" }) Assert.Empty(Keys(qube));
    }

    [Fact]
    public void Replacing_or_removing_a_forward_after_its_target_moved_takes_its_parts_off_the_former_hop_too()
    {
        Add(Web(allow: ["0.0.0.0/1"]));
        _root.Backend.SetProperty("work", "netvm", "sys-net"); // qvm-prefs: sys-firewall is no longer on the way
        Assert.NotEmpty(Parts("sys-firewall"));

        // narrowing the sources: the former hop must not keep the wider ones (they would apply again once work is back behind it)
        var plan = Add(Web(allow: ["192.168.1.0/24"]));
        Assert.Equal(["sys-net"], plan.Hops);
        Assert.Empty(Keys("sys-firewall"));
        Assert.EndsWith(" src=192.168.1.0/24 vm=work", Assert.Single(Parts("sys-net")));

        // back behind sys-firewall, applied again there; then moved off it once more and removed: every part named for it goes
        _root.Backend.SetProperty("work", "netvm", "sys-firewall");
        Add(Web(allow: ["192.168.1.0/24"]));
        Assert.NotEmpty(Parts("sys-firewall"));
        _root.Backend.SetProperty("work", "netvm", "sys-net");
        Remove("work", ForwardProtocol.Tcp, 443);
        foreach (var qube in new[] { "sys-net", "sys-firewall", "work" }) Assert.Empty(Keys(qube));
    }

    [Fact]
    public void A_failure_half_way_puts_everything_back_feature_included_and_says_so()
    {
        // qubesd refuses sys-firewall's keys half way
        using var backend = new Deployment.FaultyBackend(_root.Backend) { FailFeatureIn = "sys-firewall" };
        var plan = PortForwardPlanner.PlanAdd(backend, Web(), Options());
        var result = PortForwardPlanner.Apply(backend, plan);
        Assert.NotNull(result.Failure);
        Assert.Equal("PortForwardRolledBack", result.Failure!.ErrorId);
        Assert.Contains("failed at \"sys-firewall: set feature vm-config.qubesfw.", result.Failure.Message);
        Assert.Contains("Rolled back: feature qubesfirewall.forward.tcp.443 of work;", result.Failure.Message);
        Assert.Contains("Nothing is left changed.", result.Failure.Message);
        // Declarations and keys agree again: no declaration, no key anywhere, and the agents were never asked.
        Assert.DoesNotContain(_root.Backend.GetInventory().Get("work").Features.Keys, k => k.StartsWith("qubesfirewall.forward.", StringComparison.Ordinal));
        foreach (var qube in new[] { "sys-net", "sys-firewall", "work" }) Assert.Empty(Keys(qube));
        Assert.Empty(PortForwardPlanner.List(_root.Backend.GetInventory(), _root.Now));
        Assert.DoesNotContain(backend.Calls, c => c.StartsWith("run ", StringComparison.Ordinal));
        // every set was taken back, in reverse order
        var sets = backend.Calls.TakeWhile(c => !c.StartsWith("remove-feature", StringComparison.Ordinal)).Count(c => c.StartsWith("set-feature", StringComparison.Ordinal));
        Assert.Equal(sets - 1, backend.Calls.Count(c => c.StartsWith("remove-feature", StringComparison.Ordinal))); // the failed one was never set
    }

    [Fact]
    public void Live_a_halted_qube_on_the_way_is_Pending_and_each_running_one_is_asked_once_for_its_generation()
    {
        var live = new DeploymentOptions { Now = _root.Now, RequireRunning = true, AgentWait = TimeSpan.FromSeconds(5) };
        foreach (var q in new[] { "sys-net", "work" }) _root.Backend.SetPowerState(q, PowerState.Running);
        using var backend = new Deployment.FaultyBackend(_root.Backend);
        var plan = PortForwardPlanner.PlanAdd(backend, Web(), live);
        // nothing has to run for the keys to be set: a halted sys-firewall gets them too (no -Start needed)
        Assert.True(plan.IsComplete);
        Assert.Empty(plan.NotRunning);
        Assert.DoesNotContain("-Start", plan.Describe());
        var result = PortForwardPlanner.Apply(backend, plan);
        Assert.Null(result.Failure);
        Assert.Equal([("sys-firewall", PortForwardHopStatus.Pending), ("sys-net", PortForwardHopStatus.Applied), ("work", PortForwardHopStatus.Applied)],
            result.Hops.Select(h => (h.VMName, h.Status)));
        Assert.Contains("sys-firewall is not running: its agent applies generation " + plan.AgentGenerations["sys-firewall"] + " when it starts", result.Hops[0].Message);
        // feature calls, then one status read per running qube; nothing started, nothing written into a qube
        Assert.All(backend.Calls.Take(plan.Steps.Count), c => Assert.StartsWith("set-feature ", c, StringComparison.Ordinal));
        Assert.Equal(["run sys-net read the QubesFirewall agent status", "run work read the QubesFirewall agent status"], backend.Calls.Skip(plan.Steps.Count).Order(StringComparer.Ordinal));
    }

    [Fact]
    public void Custom_persist_on_the_way_is_reported_by_the_audit()
    {
        using var root = new TempRoot(new QubesXmlBuilder()
            .Qube("sys-net", 2, null, providesNetwork: true, features: new Dictionary<string, string> { ["service.custom-persist"] = "1" })
            .Qube("app", 3, "sys-net").Build());
        var plan = PortForwardPlanner.PlanAdd(root.Backend, PortForward.Create("app", ForwardProtocol.Tcp, 80, allowFrom: ["10.0.0.0/8"]), DeploymentOptions.For(root.Backend, root.Now));
        Assert.Null(PortForwardPlanner.Apply(root.Backend, plan).Failure);
        var inventory = root.Backend.GetInventory();
        var finding = Assert.Single(FirewallAudit.Audit(new AuditContext(inventory, root.Backend.GetFirewall, root.Now), inventory.Get("app")), f => f.Check == ForwardAuditChecks.CustomPersistHop);
        Assert.Equal(AuditSeverity.Warning, finding.Severity);
        Assert.Contains("passes through 'sys-net'", finding.Message);
        Assert.Contains("its QubesFirewall agent does not start", finding.Message);
    }

    [Fact]
    public void A_network_qube_without_the_firewall_service_gets_its_keys_and_its_agent_starts_from_rc_local()
    {
        using var root = new TempRoot(new QubesXmlBuilder()
            .Qube("sys-net", 2, null, providesNetwork: true)
            .Qube("sys-vpn", 3, "sys-net", providesNetwork: true, features: new Dictionary<string, string> { ["service.qubes-firewall"] = "" })
            .Qube("app", 4, "sys-vpn").Build());
        var plan = PortForwardPlanner.PlanAdd(root.Backend, PortForward.Create("app", ForwardProtocol.Tcp, 80, allowFrom: ["10.0.0.0/8"]), DeploymentOptions.For(root.Backend, root.Now));
        Assert.Equal(["app", "sys-net", "sys-vpn"], plan.AgentGenerations.Keys.Order(StringComparer.Ordinal));
        Assert.DoesNotContain(plan.Steps, s => s.Path is not null);
        var inventory = root.Backend.GetInventory();
        Assert.Equal(AgentScript.RcLocalHookPath, AgentInstaller.HookPathFor(inventory.Get("sys-vpn")));
        Assert.Equal(AgentScript.FirewallHookPath, AgentInstaller.HookPathFor(inventory.Get("sys-net")));
    }

    [Fact]
    public void Export_gives_the_rules_of_a_qube_or_nothing()
    {
        Add(Web());
        var inv = _root.Backend.GetInventory();
        var script = PortForwardPlanner.Export(inv, "sys-net")!;
        Assert.Equal(("sys-net", "sys-net", HookFiles.FirewallUserScript, 1), (script.VMName, script.StoredIn, script.Path, script.Forwards));
        Assert.Contains("add rule ip qubes qubesfw-dnat iifname != \"vif*\" iifname != \"lo\" fib daddr type local ip saddr 192.168.1.0/24 tcp dport 443 dnat to 10.137.0.3", script.Script);
        Assert.Null(File("sys-net", HookFiles.FirewallUserScript)); // shown, not written
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
