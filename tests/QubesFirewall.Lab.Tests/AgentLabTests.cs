using System.Diagnostics;
using System.Globalization;
using QubesFirewall.Engine.Agent;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;
using QubesFirewall.Lab.Tests.Lab;
using Xunit.Abstractions;

namespace QubesFirewall.Lab.Tests;

/// <summary>
/// Forwards and links delivered the way Qubes delivers its firewall: declarations in dom0 (an offline root shaped like the
/// lab), the derived <c>vm-config.qubesfw.*</c> features set by dom0 and exported to each qube's QubesDB stand-in (what
/// qubesd does), and the module's agent in the qubes' namespaces turning them into nft rules; real traffic through them.
/// Nothing is written into a qube and nothing is run in one for a change.
/// </summary>
[Collection(LabCollection.Name)]
public sealed class AgentLabTests : IDisposable
{
    private static readonly TimeSpan Short = TimeSpan.FromMilliseconds(400);
    private static readonly TimeSpan OneSecond = TimeSpan.FromSeconds(1);
    private const string SysNetLan = "192.168.1.10";
    private const string Outside = "192.168.1.50";
    private static readonly string[] AgentQubes = ["sys-net", "sys-firewall", "work", "personal"];
    private static readonly string[] NetworkQubes = ["sys-net", "sys-firewall"];

    private readonly LabTopology _lab;
    private readonly ITestOutputHelper _output;
    private readonly PortForwardLab _pf;
    private readonly AgentLab _agents;

    public AgentLabTests(LabTopology lab, ITestOutputHelper output)
    {
        _lab = lab;
        _output = output;
        _lab.Reset();
        _pf = new PortForwardLab(lab, agents: false);
        _agents = new AgentLab(lab);
    }

    public void Dispose()
    {
        _agents.Dispose();
        _pf.Dispose();
    }

    // ------------------------------------------------------------------ helpers

    /// <summary>Each agent qube's QubesDB as at start (with the features dom0 holds for it), then its hook as Qubes runs it; returns the hook times.</summary>
    private Dictionary<string, TimeSpan> StartAgents()
    {
        var inventory = _pf.Backend.GetInventory();
        var times = new Dictionary<string, TimeSpan>();
        foreach (var qube in AgentQubes)
        {
            _agents.CreateQubesDb(qube, inventory.Get(qube).Features.Where(f => AgentFeatures.IsAgentFeature(f.Key)));
            var (result, took) = _agents.RunHook(qube);
            result.EnsureSuccess($"agent hook in {qube}");
            times[qube] = took;
        }
        return times;
    }

    /// <summary>dom0's part: derive every qube's keys from the declarations, set/remove the features (offline root), and qubesd's export of them to the running qubes.</summary>
    private IReadOnlyDictionary<string, QubeAgentKeys> Deliver(List<AgentFeatureChange>? made = null)
    {
        var inventory = _pf.Backend.GetInventory();
        var keys = AgentFeatures.DeriveAll(inventory);
        var changes = AgentFeatures.Changes(inventory, keys);
        foreach (var c in changes)
        {
            if (c.IsRemove) _pf.Backend.RemoveFeature(c.VMName, c.Feature);
            else _pf.Backend.SetFeature(c.VMName, c.Feature, c.Value!);
        }
        _agents.Apply(changes.Where(c => AgentQubes.Contains(c.VMName)));
        made?.AddRange(changes);
        return keys;
    }

    private void Declare(PortForward f) => _pf.Backend.SetFeature(f.VMName, f.FeatureName, f.FeatureValue);

    private void Declare(InterVmLink l) => _pf.Backend.SetFeature(l.From, l.FeatureName, "1");

    private TimeSpan WaitAllApplied(IReadOnlyDictionary<string, QubeAgentKeys> keys) =>
        AgentQubes.Select(q => _agents.WaitApplied(q, keys[q].Generation)).Max();

    private Dictionary<string, string> Rulesets() => AgentQubes.ToDictionary(q => q, _lab.ListRuleset);

    private LabConnectResult Open(string from, string host, int port)
    {
        var r = _lab.Connect(from, host, port);
        Assert.True(r.Connected, $"{from} -> {host}:{port} should connect but {r}");
        return r;
    }

    private void Blocked(string from, string host, int port)
    {
        var r = _lab.Connect(from, host, port, LabProtocol.Tcp, Short);
        Assert.False(r.Connected, $"{from} -> {host}:{port} should be blocked but {r}");
    }

    /// <summary>Connects until it works; returns the time since <paramref name="since"/> started.</summary>
    private TimeSpan TimeToTraffic(Stopwatch since, string from, string host, int port)
    {
        while (true)
        {
            if (_lab.Connect(from, host, port, LabProtocol.Tcp, TimeSpan.FromMilliseconds(150)).Connected) return since.Elapsed;
            Assert.True(since.Elapsed < TimeSpan.FromSeconds(10), $"{from} -> {host}:{port} never connected");
        }
    }

    // ------------------------------------------------------------------ tests

    [Fact]
    public void Forward_and_link_from_features_carry_real_traffic_reach_running_qubes_within_a_second_and_removal_restores_every_ruleset()
    {
        using var work = _lab.StartServer("work", 8080);
        using var db = _lab.StartServer("personal", 5432);
        var hooks = StartAgents();
        foreach (var (qube, took) in hooks)
        {
            _output.WriteLine($"hook in {qube}: {took.TotalMilliseconds:F0} ms");
            Assert.True(took < OneSecond, $"the hook in {qube} took {took.TotalMilliseconds:F0} ms");
            Assert.Contains(_agents.SystemdCalls(qube), c => c.StartsWith("qubesfw-agent ", StringComparison.Ordinal) && c.EndsWith(" run", StringComparison.Ordinal));
            _agents.WaitApplied(qube, null);
        }
        var before = Rulesets();
        Blocked("outside", SysNetLan, 8443);
        Blocked("work", _lab.Ip("personal"), 5432);

        // a forward through sys-net and sys-firewall, from features only
        Declare(PortForward.Create("work", ForwardProtocol.Tcp, 8443, 8080, ForwardType.External, [Outside + "/32"], comment: "web"));
        var clock = Stopwatch.StartNew();
        var keys = Deliver();
        var applied = WaitAllApplied(keys);
        var traffic = TimeToTraffic(clock, "outside", SysNetLan, 8443);
        _output.WriteLine($"forward: feature.Set to every agent applied {applied.TotalMilliseconds:F0} ms, to traffic flowing {traffic.TotalMilliseconds:F0} ms");
        Assert.True(applied < OneSecond, $"the agents applied after {applied.TotalMilliseconds:F0} ms");
        Assert.Equal(["sys-net", "sys-firewall", "work"], AgentQubes.Where(q => !keys[q].IsEmpty));
        var r = Open("outside", SysNetLan, 8443);
        Assert.Equal("work", r.ServerNode);
        Assert.Equal(Outside, r.PeerAddress);
        Blocked("outside2", SysNetLan, 8443);

        // a link work -> personal behind sys-firewall
        Declare(InterVmLink.Create("work", "personal", ForwardProtocol.Tcp, new LinkPorts(5432, 5432)));
        clock.Restart();
        keys = Deliver();
        applied = WaitAllApplied(keys);
        traffic = TimeToTraffic(clock, "work", _lab.Ip("personal"), 5432);
        _output.WriteLine($"link: feature.Set to every agent applied {applied.TotalMilliseconds:F0} ms, to traffic flowing {traffic.TotalMilliseconds:F0} ms");
        Assert.True(applied < OneSecond, $"the agents applied after {applied.TotalMilliseconds:F0} ms");
        Assert.Equal("personal", Open("work", _lab.Ip("personal"), 5432).ServerNode);
        Blocked("personal", _lab.Ip("work"), 5432);
        Assert.Equal("work", Open("outside", SysNetLan, 8443).ServerNode);

        // re-deriving an unchanged plan sets nothing
        var again = new List<AgentFeatureChange>();
        Deliver(again);
        Assert.Empty(again);

        // the agents' rulesets are the ones the module's exported scripts make (the rulesets the other lab tests prove)
        var agentRulesets = Rulesets();
        var inventory = _pf.Backend.GetInventory();
        var exported = AgentQubes.ToDictionary(q => q, q => PortForwardPlanner.Export(inventory, q)?.Script);
        foreach (var qube in AgentQubes) _agents.Stop(qube);
        foreach (var qube in AgentQubes)
        {
            _lab.Reboot(qube);
            if (exported[qube] is { } script) _pf.RunScript(qube, script).EnsureSuccess($"exported script in {qube}");
            Assert.Equal(agentRulesets[qube], _lab.ListRuleset(qube));
        }

        // removal: every qube back to the ruleset it had before the first forward
        StartAgents();
        foreach (var qube in AgentQubes) _agents.WaitApplied(qube, keys[qube].Generation);
        _pf.Backend.RemoveFeature("work", PortForwardFeature.NameFor(ForwardProtocol.Tcp, 8443));
        _pf.Backend.RemoveFeature("work", InterVmLinkFeature.NameFor("personal", ForwardProtocol.Tcp, new LinkPorts(5432, 5432)));
        var removed = new List<AgentFeatureChange>();
        keys = Deliver(removed);
        Assert.All(removed, c => Assert.True(c.IsRemove));
        Assert.All(AgentQubes, q => Assert.Empty(_agents.Keys(q)));
        WaitAllApplied(keys);
        Assert.Equal(before, Rulesets());
        Blocked("outside", SysNetLan, 8443);
        Blocked("work", _lab.Ip("personal"), 5432);
    }

    [Fact]
    public void A_burst_of_twenty_changes_ends_in_the_final_ruleset_and_a_hop_restarted_from_nothing_comes_back_the_same()
    {
        using var work = _lab.StartServer("work", 9020);
        using var work2 = _lab.StartServer("work", 9005);
        foreach (var qube in NetworkQubes) _agents.InstallHook(qube, networkQube: true);
        foreach (var qube in AgentQubes.Except(NetworkQubes)) _agents.InstallHook(qube, networkQube: false);
        StartAgents();
        foreach (var qube in AgentQubes) _agents.WaitApplied(qube, null);

        // 20 changes as fast as dom0 makes them, no waiting in between: each adds a forward (and rewrites every key of the hops)
        IReadOnlyDictionary<string, QubeAgentKeys> keys = new Dictionary<string, QubeAgentKeys>();
        var calls = 0;
        for (var port = 9001; port <= 9020; port++)
        {
            Declare(PortForward.Create("work", ForwardProtocol.Tcp, port, allowFrom: ["192.168.1.0/24"]));
            var made = new List<AgentFeatureChange>();
            keys = Deliver(made);
            calls += made.Count;
        }
        _output.WriteLine($"20 changes: {calls} feature calls");
        WaitAllApplied(keys);
        Assert.Equal("work", Open("outside", SysNetLan, 9020).ServerNode);
        Assert.Equal("work", Open("outside2", SysNetLan, 9005).ServerNode);
        var final = Rulesets();
        Assert.Equal(20, final["sys-net"].Split('\n').Count(l => l.Contains(" dnat to ", StringComparison.Ordinal) && l.Contains("comment \"tcp/90", StringComparison.Ordinal)));

        // restart each hop from nothing: its agent and /run gone, the base ruleset, then Qubes' start order runs the hook
        foreach (var qube in AgentQubes)
        {
            _agents.Stop(qube);
            _agents.CreateQubesDb(qube, KeysOf(keys[qube]));
            Assert.All(_lab.Reboot(qube), run => run.EnsureSuccess($"hooks in {qube}"));
            _agents.WaitApplied(qube, keys[qube].Generation);
            Assert.Equal(final[qube], _lab.ListRuleset(qube));
        }
        Assert.Equal("work", Open("outside", SysNetLan, 9020).ServerNode);
    }

    private static IEnumerable<KeyValuePair<string, string>> KeysOf(QubeAgentKeys keys) => keys.All.Select(k => new KeyValuePair<string, string>(k.Feature, k.Value));

    [Fact]
    public void Keys_for_another_qube_or_of_another_generation_are_not_applied_and_an_invalid_value_is_refused_while_the_rest_applies()
    {
        using var work = _lab.StartServer("work", 8080);
        using var work2 = _lab.StartServer("work", 8081);
        StartAgents();
        Declare(PortForward.Create("work", ForwardProtocol.Tcp, 8080));
        var keys = Deliver();
        WaitAllApplied(keys);
        Assert.Equal("work", Open("outside", SysNetLan, 8080).ServerNode);
        var good = Rulesets();
        var sysNet = keys["sys-net"];
        var gen = sysNet.Generation!;

        // a key naming another qube (sys-firewall's own key copied onto sys-net), with sys-net's generation: the whole set is refused
        var theirs = keys["sys-firewall"].Data[0];
        var forged = theirs.Value.Replace(keys["sys-firewall"].Generation!, gen, StringComparison.Ordinal);
        _agents.SetFeature("sys-net", theirs.Feature + "x", forged);
        _agents.SetFeature("sys-net", AgentFeatures.GenFeature, $"for=sys-net gen={gen} keys={sysNet.Data.Count + 1}");
        _agents.WaitStatus("sys-net", $"state=refused gen={gen} ");
        Assert.Contains("names another qube", _agents.Status("sys-net"));
        Assert.Equal(good["sys-net"], _lab.ListRuleset("sys-net"));
        _agents.RemoveFeature("sys-net", theirs.Feature + "x");
        _agents.SetFeature("sys-net", sysNet.Gen!.Feature, sysNet.Gen.Value);
        _agents.WaitApplied("sys-net", gen);

        // a set whose gen does not match its keys: nothing applied, the rules stay as they were
        var other = new string('0', 16);
        _agents.SetFeature("sys-net", AgentFeatures.GenFeature, $"for=sys-net gen={other} keys={sysNet.Data.Count}");
        _agents.WaitStatus("sys-net", $"state=waiting gen={other} ");
        Assert.Equal(good["sys-net"], _lab.ListRuleset("sys-net"));
        Assert.Equal("work", Open("outside", SysNetLan, 8080).ServerNode);

        // an invalid value (a vif interface, a missing src=) next to a valid new key: those two refused, the valid one applied
        var valid = sysNet.Data[0].Value.Replace("port=8080 to=8080", "port=8081 to=8081", StringComparison.Ordinal);
        _agents.SetFeature("sys-net", "vm-config.qubesfw.hop4.08081.tcp.aaaaaaaaaa", valid);
        _agents.SetFeature("sys-net", "vm-config.qubesfw.hop4.08082.tcp.bbbbbbbbbb", valid.Replace("in=out", "in=if:vif3.0", StringComparison.Ordinal).Replace("port=8081 to=8081", "port=8082 to=8082", StringComparison.Ordinal));
        _agents.SetFeature("sys-net", "vm-config.qubesfw.hop4.08083.tcp.cccccccccc", valid.Replace(" src=any", "", StringComparison.Ordinal).Replace("port=8081 to=8081", "port=8083 to=8083", StringComparison.Ordinal));
        _agents.SetFeature("sys-net", AgentFeatures.GenFeature, $"for=sys-net gen={gen} keys={sysNet.Data.Count + 3}");
        _agents.WaitStatus("sys-net", $"state=partial gen={gen} ");
        var status = _agents.Status("sys-net")!;
        Assert.Contains("qubesfw.hop4.08082.tcp.bbbbbbbbbb (in=", status);
        Assert.Contains("qubesfw.hop4.08083.tcp.cccccccccc (src=", status);
        Assert.DoesNotContain("08081", status);
        var ruleset = _lab.ListRuleset("sys-net");
        Assert.Contains("tcp dport 8081", ruleset);
        Assert.DoesNotContain("dport 8082", ruleset);
        Assert.DoesNotContain("dport 8083", ruleset);
        Assert.Equal("work", Open("outside", SysNetLan, 8080).ServerNode);
        Assert.Contains("tcp dport 8080", ruleset);

        // dom0's next plan removes the strays and the agent is back to the derived set
        var inventory = _pf.Backend.GetInventory();
        var fixes = AgentFeatures.Changes(inventory.Get("sys-net") with
        {
            Features = _agents.Keys("sys-net"),
        }, keys["sys-net"]);
        Assert.Equal(3, fixes.Count(c => c.IsRemove));
        Assert.Equal(AgentFeatures.GenFeature, fixes[^1].Feature);
        _agents.Apply(fixes);
        _agents.WaitApplied("sys-net", gen);
        Assert.Equal(good["sys-net"], _lab.ListRuleset("sys-net"));
    }

    [Fact]
    public void Add_and_Remove_QubePortForward_through_the_agent_are_feature_calls_that_the_agents_turn_into_real_traffic()
    {
        using var work = _lab.StartServer("work", 8080);
        foreach (var qube in AgentQubes) _pf.Backend.SetFeature(qube, AgentScript.VersionFeature, AgentScript.Version);
        StartAgents();
        foreach (var qube in AgentQubes) _agents.WaitApplied(qube, null);
        var before = Rulesets();

        var clock = Stopwatch.StartNew();
        var plan = PortForwardPlanner.PlanAdd(_pf.Backend, PortForward.Create("work", ForwardProtocol.Tcp, 8443, 8080, allowFrom: [Outside + "/32"]),
            DeploymentOptions.For(_pf.Backend, _pf.Now));
        Assert.True(plan.ViaAgent);
        Assert.All(plan.Steps, s => Assert.Equal(Engine.Deployment.DeploymentStepKind.SetFeature, s.Kind));
        var result = PortForwardPlanner.Apply(_pf.Backend, plan);
        Assert.Null(result.Failure);
        Mirror(plan.Steps);
        var applied = plan.AgentGenerations.Select(g => _agents.WaitApplied(g.Key, g.Value)).Max();
        var traffic = TimeToTraffic(clock, "outside", SysNetLan, 8443);
        _output.WriteLine($"Add-QubePortForward via the agent: plan+features {applied.TotalMilliseconds:F0} ms to applied, {traffic.TotalMilliseconds:F0} ms to traffic");
        Assert.Equal("work", Open("outside", SysNetLan, 8443).ServerNode);
        Blocked("outside2", SysNetLan, 8443);

        var remove = PortForwardPlanner.PlanRemove(_pf.Backend, "work", ForwardProtocol.Tcp, 8443, DeploymentOptions.For(_pf.Backend, _pf.Now));
        Assert.True(remove.ViaAgent);
        Assert.Null(PortForwardPlanner.Apply(_pf.Backend, remove).Failure);
        Mirror(remove.Steps);
        foreach (var (qube, gen) in remove.AgentGenerations) _agents.WaitApplied(qube, gen == "none" ? null : gen);
        Blocked("outside", SysNetLan, 8443);
        Assert.Equal(before, Rulesets());
    }

    [Fact]
    public void Forwards_piped_into_one_Add_are_one_change_the_agents_apply_each_hop_once_and_every_forward_carries_traffic()
    {
        using var web = _lab.StartServer("work", 8080);
        using var db = _lab.StartServer("personal", 5432);
        foreach (var qube in AgentQubes) _pf.Backend.SetFeature(qube, AgentScript.VersionFeature, AgentScript.Version);
        StartAgents();
        foreach (var qube in AgentQubes) _agents.WaitApplied(qube, null);
        var before = Rulesets();

        // three forwards to two qubes, as Add-QubePortForward plans a pipeline: one plan, one generation per qube
        var forwards = new[]
        {
            PortForward.Create("work", ForwardProtocol.Tcp, 8443, 8080, allowFrom: [Outside + "/32"]),
            PortForward.Create("work", ForwardProtocol.Tcp, 8444, 8080, allowFrom: [Outside + "/32"]),
            PortForward.Create("personal", ForwardProtocol.Tcp, 15432, 5432, allowFrom: [Outside + "/32"]),
        };
        var plan = PortForwardPlanner.PlanAdd(_pf.Backend, forwards, DeploymentOptions.For(_pf.Backend, _pf.Now));
        Assert.Equal(3, plan.Members.Count);
        Assert.Equal(["personal", "sys-firewall", "sys-net", "work"], plan.AgentGenerations.Keys.Order());
        Assert.Equal(4, plan.Steps.Count(s => s.FeatureName == AgentFeatures.GenFeature));
        Assert.Null(PortForwardPlanner.Apply(_pf.Backend, plan).Failure);
        Mirror(plan.Steps);
        foreach (var (qube, gen) in plan.AgentGenerations) _agents.WaitApplied(qube, gen);
        Assert.Equal("work", Open("outside", SysNetLan, 8443).ServerNode);
        Assert.Equal("work", Open("outside", SysNetLan, 8444).ServerNode);
        Assert.Equal("personal", Open("outside", SysNetLan, 15432).ServerNode);
        Blocked("outside2", SysNetLan, 8444);

        // removed as one change too: every ruleset as before
        var remove = PortForwardPlanner.PlanRemove(_pf.Backend, forwards.Select(f => (f.VMName, f.Protocol, f.Port)).ToList(), DeploymentOptions.For(_pf.Backend, _pf.Now));
        Assert.Null(PortForwardPlanner.Apply(_pf.Backend, remove).Failure);
        Mirror(remove.Steps);
        foreach (var (qube, gen) in remove.AgentGenerations) _agents.WaitApplied(qube, gen == "none" ? null : gen);
        Blocked("outside", SysNetLan, 8443);
        Blocked("outside", SysNetLan, 15432);
        Assert.Equal(before, Rulesets());
    }

    [Fact]
    public void A_change_made_while_the_agent_starts_is_not_lost_the_watch_is_registered_before_the_first_read()
    {
        // The watch stand-in takes 0.4 s to register. A change 0.15 s after the start falls between a first read made at once and
        // the registration: an agent that read first would keep the empty set for good. The agent starts the watch, lets it
        // register, and only then reads.
        using var work = _lab.StartServer("work", 8080);
        foreach (var qube in AgentQubes) _agents.CreateQubesDb(qube);
        _agents.WatchDelay = "0.4";
        var (hook, took) = _agents.RunHook("sys-net");
        hook.EnsureSuccess("agent hook in sys-net");
        Assert.True(took < OneSecond, $"the hook took {took.TotalMilliseconds:F0} ms");
        Thread.Sleep(150);
        var forward = PortForward.Create("work", ForwardProtocol.Tcp, 8443, 8080, ForwardType.External, [Outside + "/32"]);
        Declare(forward);
        var keys = Deliver();
        Assert.False(keys["sys-net"].IsEmpty);
        var applied = _agents.WaitApplied("sys-net", keys["sys-net"].Generation, TimeSpan.FromSeconds(3));
        _output.WriteLine($"change during the start applied {applied.TotalMilliseconds:F0} ms after it was made");
        Assert.Contains("qubesfw-dnat", _lab.ListRuleset("sys-net"), StringComparison.Ordinal);

        // and the watch is live afterwards: the next change is applied without a restart
        _pf.Backend.RemoveFeature("work", forward.FeatureName);
        Deliver();
        _agents.WaitApplied("sys-net", null, TimeSpan.FromSeconds(3));
    }

    /// <summary>qubesd's export of the plan's vm-config.* feature calls to the running qubes' QubesDB.</summary>
    private void Mirror(IEnumerable<Engine.Deployment.DeploymentStep> steps)
    {
        foreach (var s in steps.Where(s => s.FeatureName!.StartsWith(AgentFeatures.VmConfigPrefix, StringComparison.Ordinal) && AgentQubes.Contains(s.VMName)))
        {
            if (s.Kind == Engine.Deployment.DeploymentStepKind.RemoveFeature) _agents.RemoveFeature(s.VMName, s.FeatureName!);
            else _agents.SetFeature(s.VMName, s.FeatureName!, s.FeatureValue!);
        }
    }
}
