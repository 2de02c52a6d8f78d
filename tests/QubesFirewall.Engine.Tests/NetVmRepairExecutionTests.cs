using System.Text;
using QubesFirewall.Engine.AdminApi;
using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;
using QubesFirewall.Engine.Tests.AdminApi;
using QubesFirewall.TestQubesd;

namespace QubesFirewall.Engine.Tests;

/// <summary>
/// Running a repair plan on the sample root (running: sys-net, sys-firewall, work, personal, sys-usb,
/// dom0; work and personal follow default_netvm = sys-firewall; sys-firewall's netvm sys-net is explicit).
/// By hand: the plan is sys-firewall (set netvm sys-net), personal, work (each set netvm sys-firewall, then reset).
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class NetVmRepairOfflineTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "qfw-repair-" + Guid.NewGuid().ToString("N")[..10]);
    private readonly OfflineRoot _backend;

    public NetVmRepairOfflineTests()
    {
        LiveQubesd.Copy(OfflineRootTests.SamplePath(), _root);
        _backend = new OfflineRoot(_root);
    }

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private string State(params string[] parts) => Path.Combine([_root, "qubesfirewall-state", .. parts]);

    private List<NetVmRepairResult> RunAll(IReadOnlyCollection<string>? netVms = null, bool start = false)
    {
        var plan = NetVmRepairPlanner.Plan(_backend.GetInventory(), netVms, start);
        return NetVmRepairPlanner.Run(_backend, plan).ToList();
    }

    [Fact]
    public void Reattaching_every_client_leaves_qubes_xml_byte_identical()
    {
        var before = File.ReadAllBytes(Path.Combine(_root, "qubes.xml"));
        var results = RunAll();
        Assert.Equal(
        [
            ("sys-firewall", NetVmRepairAction.Reattached),
            ("personal", NetVmRepairAction.Reattached),
            ("work", NetVmRepairAction.Reattached),
        ], results.Select(r => (r.VMName, r.Action)));
        Assert.Equal(["qvm-prefs work netvm sys-firewall", "qvm-prefs --default work netvm"], results[2].Commands);
        Assert.Equal(before, File.ReadAllBytes(Path.Combine(_root, "qubes.xml")));
        var inventory = _backend.GetInventory();
        Assert.Equal(NetVmSource.Default, inventory.Get("work").NetVmSource);
        Assert.Equal(NetVmSource.Explicit, inventory.Get("sys-firewall").NetVmSource);
    }

    [Fact]
    public void A_reattach_reloads_the_firewall_into_the_network_qube_and_is_logged()
    {
        RunAll();
        var log = File.ReadAllText(State("work", "applied.log"));
        Assert.Contains(" netvm re-attached to sys-firewall (qvm-prefs work netvm sys-firewall; qvm-prefs --default work netvm); firewall reloaded into sys-firewall\n", log);
        Assert.Contains(" netvm re-attached to sys-net (qvm-prefs sys-firewall netvm sys-net); firewall reloaded into sys-net\n", File.ReadAllText(State("sys-firewall", "applied.log")));
        // work 10.137.0.11 and personal 10.137.0.10 in sys-firewall's QubesDB; sys-firewall (dispid 2741: 10.138.10.201,
        // no firewall.xml: the default 'accept') in sys-net's.
        var firewallDb = File.ReadAllLines(State("sys-firewall", "qubesdb.txt"));
        Assert.Contains("/qubes-firewall/10.137.0.11/policy\tdrop", firewallDb);
        Assert.Contains("/qubes-firewall/10.137.0.11/0006\taction=drop", firewallDb);
        Assert.Contains("/qubes-firewall/10.137.0.10/policy\tdrop", firewallDb);
        Assert.Equal(
        [
            "/qubes-firewall/10.138.10.201\t",
            "/qubes-firewall/10.138.10.201/0000\taction=accept",
            "/qubes-firewall/10.138.10.201/policy\tdrop",
        ], File.ReadAllLines(State("sys-net", "qubesdb.txt")));
    }

    [Fact]
    public void One_network_qube_reattaches_its_direct_clients_only()
    {
        var results = RunAll(["sys-net"]);
        Assert.Equal([("sys-firewall", NetVmRepairAction.Reattached)], results.Select(r => (r.VMName, r.Action)));
        Assert.False(File.Exists(State("work", "applied.log")));
    }

    [Fact]
    public void With_start_a_halted_network_qube_is_started_first()
    {
        _backend.SetPowerState("sys-firewall", PowerState.Halted);
        var refused = RunAll();
        Assert.Equal([("personal", NetVmRepairAction.Failed), ("work", NetVmRepairAction.Failed)], refused.Select(r => (r.VMName, r.Action)));
        Assert.Equal("Halted\n", File.ReadAllText(State("sys-firewall", "power-state")));

        var results = RunAll(start: true);
        Assert.Equal(
        [
            ("sys-firewall", NetVmRepairAction.Started),
            ("personal", NetVmRepairAction.Reattached),
            ("work", NetVmRepairAction.Reattached),
        ], results.Select(r => (r.VMName, r.Action)));
        Assert.Equal(["qvm-start sys-firewall"], results[0].Commands);
        Assert.Equal("Running\n", File.ReadAllText(State("sys-firewall", "power-state")));
    }

    [Fact]
    public void A_paused_qube_is_skipped_and_left_alone()
    {
        _backend.SetPowerState("work", PowerState.Paused);
        var results = RunAll(["sys-firewall"]);
        Assert.Equal([("personal", NetVmRepairAction.Reattached), ("work", NetVmRepairAction.Skipped)], results.Select(r => (r.VMName, r.Action)));
        Assert.Empty(results[1].Commands);
        Assert.False(File.Exists(State("work", "applied.log")));
    }
}

/// <summary>
/// The same repair through the live backend and the stand-in qubesd: the exact Admin API calls, in
/// order, and what qubesd does with them (the stand-in follows core-admin's netvm handlers: a set fires
/// detach + attach even for the same value, a reset to an equal default fires nothing).
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class NetVmRepairLiveTests : IDisposable
{
    private readonly LiveQubesd _live = new();

    public void Dispose() => _live.Dispose();

    private FakeQubesd Server => _live.Server;

    private static string Raw(RecordedCall c) => Encoding.ASCII.GetString(c.Raw);

    /// <summary>
    /// The calls of a repair of every client of the sample, parents first (followers set, then reset), each qube's
    /// properties read again just before its first change (a netvm changed meanwhile stops the repair).
    /// </summary>
    private static readonly string[] EveryClient =
    [
        "admin.vm.property.GetAll+ dom0 name sys-firewall\0",
        "admin.vm.property.Set+netvm dom0 name sys-firewall\0sys-net",
        "admin.vm.property.GetAll+ dom0 name personal\0",
        "admin.vm.property.Set+netvm dom0 name personal\0sys-firewall",
        "admin.vm.property.Reset+netvm dom0 name personal\0",
        "admin.vm.property.GetAll+ dom0 name work\0",
        "admin.vm.property.Set+netvm dom0 name work\0sys-firewall",
        "admin.vm.property.Reset+netvm dom0 name work\0",
    ];

    private List<NetVmRepairResult> RunAll(IReadOnlyCollection<string>? netVms = null, bool start = false)
    {
        var backend = _live.NewBackend();
        var plan = NetVmRepairPlanner.Plan(backend.GetInventory(), netVms, start);
        Server.ClearCalls();
        return NetVmRepairPlanner.Run(backend, plan).ToList();
    }

    [Fact]
    public void The_exact_call_sequence_parents_first()
    {
        var before = File.ReadAllBytes(Path.Combine(_live.Root, "qubes.xml"));
        var results = RunAll();
        Assert.All(results, r => Assert.Equal(NetVmRepairAction.Reattached, r.Action));
        Assert.Equal(EveryClient, Server.Calls.Select(Raw));
        Assert.Equal(
        [
            "detach sys-firewall sys-net", "attach sys-firewall sys-net",
            "detach personal sys-firewall", "attach personal sys-firewall",
            "detach work sys-firewall", "attach work sys-firewall",
        ], Server.NetworkEvents);
        Assert.Equal(before, File.ReadAllBytes(Path.Combine(_live.Root, "qubes.xml")));
        Assert.Equal(NetVmSource.Default, _live.NewBackend().GetInventory().Get("work").NetVmSource);
    }

    [Fact]
    public void Qubesd_refuses_attaching_a_running_qube_to_a_halted_network_qube()
    {
        // Why the plan refuses without -Start: sys-whonix is halted in the sample.
        var refused = Assert.Throws<QubesdException>(() => _live.Backend.SetProperty("work", "netvm", "sys-whonix"));
        Assert.Equal("QubesVMNotStartedError", refused.QubesdClass);
        Assert.Contains("Cannot dynamically attach to stopped qube sys-whonix", refused.QubesdMessage);
    }

    [Fact]
    public void Without_start_a_halted_network_qube_costs_no_call()
    {
        Server.SetPowerState("sys-firewall", PowerState.Halted);
        var results = RunAll(["sys-firewall"]);
        Assert.Equal([("personal", NetVmRepairAction.Failed), ("work", NetVmRepairAction.Failed)], results.Select(r => (r.VMName, r.Action)));
        Assert.Empty(Server.Calls);
    }

    [Fact]
    public void With_start_the_network_qube_is_started_before_its_clients_are_attached()
    {
        Server.SetPowerState("sys-firewall", PowerState.Halted);
        var results = RunAll(["sys-firewall"], start: true);
        Assert.Equal([NetVmRepairAction.Started, NetVmRepairAction.Reattached, NetVmRepairAction.Reattached], results.Select(r => r.Action));
        Assert.Equal(QubesFirewall.Tests.Shared.SampleRepairCalls.StartSysFirewallThenReattach, Server.Calls.Select(Raw).Where(c => !c.StartsWith("admin.vm.property.GetAll", StringComparison.Ordinal)));
        // each client's properties read again just before its first change
        Assert.Equal(
        // sys-firewall started instead of re-attached, then its clients as in every repair
        ["admin.vm.Start+ dom0 name sys-firewall\0", .. EveryClient[2..]], Server.Calls.Select(Raw));
        Assert.Equal("start sys-firewall", Server.NetworkEvents[0]);
    }

    [Fact]
    public void A_failed_start_fails_its_clients_without_a_call()
    {
        Server.SetPowerState("sys-firewall", PowerState.Halted);
        Server.InjectFault(new Fault(FaultKind.ExceptionReply, "admin.vm.Start", "sys-firewall", ExceptionClass: "QubesException", Message: "not enough memory"));
        var results = RunAll(start: true);
        Assert.Equal(["sys-firewall", "personal", "work"], results.Select(r => r.VMName));
        Assert.All(results, r => Assert.Equal(NetVmRepairAction.Failed, r.Action));
        Assert.Contains("not enough memory", results[0].Reason);
        Assert.StartsWith("Not attempted: the network qube 'sys-firewall' could not be started", results[1].Reason);
        Assert.Equal(["admin.vm.Start"], Server.Calls.Select(c => c.Method));
    }

    [Fact]
    public void A_failed_reset_says_the_qube_no_longer_follows_the_default()
    {
        // Twice: the reset of the repair, and the rollback's reset that would put the qube back on default_netvm.
        Server.InjectFault(new Fault(FaultKind.ExceptionReply, "admin.vm.property.Reset", "work", Count: 2, ExceptionClass: "QubesException", Message: "locked"));
        var results = RunAll(["sys-firewall"]);
        var work = results.Single(r => r.VMName == "work");
        Assert.Equal(NetVmRepairAction.Failed, work.Action);
        Assert.Contains("no longer follows default_netvm", work.Reason);
        Assert.Contains("qvm-prefs --default work netvm", work.Reason);
        Assert.Equal(["qvm-prefs work netvm sys-firewall"], work.Commands);
        Assert.Equal(NetVmRepairAction.Reattached, results.Single(r => r.VMName == "personal").Action);
    }

    [Fact]
    public void A_failure_half_way_puts_back_every_netvm_already_changed()
    {
        // work's reset fails once: work was set to an explicit netvm and no longer follows default_netvm. The rollback
        // resets it, then puts personal back (its reset undone by a set, its set by a reset); sys-firewall's netvm was
        // set to the explicit value it had, so there is nothing to put back there.
        Server.InjectFault(new Fault(FaultKind.ExceptionReply, "admin.vm.property.Reset", "work", ExceptionClass: "QubesException", Message: "locked"));
        var results = RunAll();
        Assert.Equal(
        [
            .. EveryClient,
            "admin.vm.property.Reset+netvm dom0 name work\0",
            "admin.vm.property.Set+netvm dom0 name personal\0sys-firewall",
            "admin.vm.property.Reset+netvm dom0 name personal\0",
        ], Server.Calls.Select(Raw));
        var work = results.Single(r => r.VMName == "work");
        Assert.Equal(NetVmRepairAction.Failed, work.Action);
        Assert.Contains("could not be reset to the default afterwards: ", work.Reason);
        Assert.Contains("Every netvm the repair had changed was put back as it was.", work.Reason);
        Assert.DoesNotContain("no longer follows", work.Reason);
        Assert.Contains("put back as it was because 'work' failed", results.Single(r => r.VMName == "personal").Reason);
        var inventory = _live.NewBackend().GetInventory();
        Assert.Equal(NetVmSource.Default, inventory.Get("work").NetVmSource);
        Assert.Equal(NetVmSource.Default, inventory.Get("personal").NetVmSource);
        Assert.Equal(NetVmSource.Explicit, inventory.Get("sys-firewall").NetVmSource);
    }
}
