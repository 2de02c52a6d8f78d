using System.Text;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;
using QubesFirewall.TestQubesd;

namespace QubesFirewall.PowerShell.Tests;

/// <summary>
/// Repair-QubeNetVm through a hosted runspace, on both backends with the same expectations. In the
/// sample, sys-net, sys-firewall, work and personal run; work and personal follow default_netvm
/// (sys-firewall); sys-firewall's netvm (sys-net) is explicit. By hand, the order is sys-firewall,
/// personal, work (depth 1, then depth 2 in qubes.xml order).
/// </summary>
public abstract class NetVmRepairCmdletTests : IDisposable
{
    protected readonly SampleRootCopy _root = new();

    public virtual void Dispose() => _root.Dispose();

    protected abstract PsRun Run(string script);

    /// <summary>Changes a qube's power state as the backend sees it (offline: the state folder; live: the stand-in qubesd).</summary>
    protected abstract void SetPowerState(string qube, PowerState state);

    protected string QubesXml => Path.Combine(_root.Path, "qubes.xml");

    private static List<(string, NetVmRepairAction)> Actions(PsRun run) => run.Of<NetVmRepairResult>().Select(r => (r.VMName, r.Action)).ToList();

    [Fact]
    public void Every_client_parents_first_and_qubes_xml_stays_byte_identical()
    {
        var before = File.ReadAllBytes(QubesXml);
        var run = Run("Repair-QubeNetVm -Confirm:$false -Verbose");
        run.AssertNoErrors();
        Assert.Equal([("sys-firewall", NetVmRepairAction.Reattached), ("personal", NetVmRepairAction.Reattached), ("work", NetVmRepairAction.Reattached)], Actions(run));
        // One question for the plan, not one per qube (an outage re-attaches many): its text lists every step, parents first.
        // The uniform plan text: one numbered line per change (each netvm call, then the re-attach it completes).
        Assert.Equal(string.Join("\n",
            "Repair network attachments, in this order:",
            "  1. sys-firewall (netvm sys-net): qvm-prefs sys-firewall netvm sys-net",
            "  2. sys-firewall (netvm sys-net): re-attached, its firewall reloaded into sys-net",
            "       qvm-prefs sys-firewall netvm sys-net",
            "  3. personal (netvm sys-firewall): qvm-prefs personal netvm sys-firewall",
            "  4. personal (netvm sys-firewall): qvm-prefs --default personal netvm",
            "  5. personal (netvm sys-firewall): re-attached, its firewall reloaded into sys-firewall",
            "       qvm-prefs personal netvm sys-firewall; qvm-prefs --default personal netvm",
            "  6. work (netvm sys-firewall): qvm-prefs work netvm sys-firewall",
            "  7. work (netvm sys-firewall): qvm-prefs --default work netvm",
            "  8. work (netvm sys-firewall): re-attached, its firewall reloaded into sys-firewall",
            "       qvm-prefs work netvm sys-firewall; qvm-prefs --default work netvm"),
            Assert.Single(run.Verbose, v => v.StartsWith("Repair network attachments", StringComparison.Ordinal)));
        Assert.DoesNotContain(run.Verbose, v => v.StartsWith("Performing", StringComparison.Ordinal));
        Assert.Equal(before, File.ReadAllBytes(QubesXml));
        Assert.Equal("Default", Run("(Get-Qube work).NetVmSource").Output.Single().ToString());
    }

    [Fact]
    public void WhatIf_changes_nothing()
    {
        var before = _root.Snapshot();
        var run = Run("Repair-QubeNetVm -WhatIf");
        run.AssertNoErrors();
        Assert.Empty(run.Output);
        _root.AssertUnchanged(before);
    }

    [Fact]
    public void Without_confirm_false_it_asks_and_changes_nothing()
    {
        var before = _root.Snapshot();
        var run = Run("Repair-QubeNetVm -NetVM sys-firewall");
        Assert.NotEmpty(run.Errors);
        // asked once for the plan (personal and work), not once per qube
        Assert.Single(run.Errors, e => e.FullyQualifiedErrorId.StartsWith("HostFunctionNotImplemented", StringComparison.Ordinal));
        _root.AssertUnchanged(before);
    }

    [Fact]
    public void A_halted_network_qube_refuses_its_clients_unless_start()
    {
        SetPowerState("sys-firewall", PowerState.Halted);
        var refused = Run("Repair-QubeNetVm -Confirm:$false");
        Assert.Equal([("personal", NetVmRepairAction.Failed), ("work", NetVmRepairAction.Failed)], Actions(refused));
        Assert.Equal(2, refused.Errors.Count);
        Assert.All(refused.Errors, e => Assert.Equal("NetVmNotRunning,QubesFirewall.PowerShell.Cmdlets.RepairQubeNetVmCommand", e.FullyQualifiedErrorId));
        Assert.Contains("Repair-QubeNetVm with -Start", refused.Errors[0].ToString());

        var run = Run("'sys-firewall' | Repair-QubeNetVm -Start -Confirm:$false");
        run.AssertNoErrors();
        Assert.Equal([("sys-firewall", NetVmRepairAction.Started), ("personal", NetVmRepairAction.Reattached), ("work", NetVmRepairAction.Reattached)], Actions(run));
        Assert.Equal("Running", Run("(Get-Qube sys-firewall).State").Output.Single().ToString());
    }

    [Fact]
    public void A_paused_qube_is_skipped()
    {
        SetPowerState("work", PowerState.Paused);
        var run = Run("Repair-QubeNetVm sys-firewall -Confirm:$false");
        run.AssertNoErrors();
        Assert.Equal([("personal", NetVmRepairAction.Reattached), ("work", NetVmRepairAction.Skipped)], Actions(run));
        Assert.Contains("unpaused", run.Of<NetVmRepairResult>().Last().Reason);
    }

    [Theory]
    [InlineData("Repair-QubeNetVm -NetVM work -Confirm:$false", "NotANetworkQube")]
    [InlineData("Repair-QubeNetVm -NetVM nosuch -Confirm:$false", "QubeNotFound")]
    public void Bad_network_qubes_are_refused(string script, string errorId)
    {
        var before = _root.Snapshot();
        var run = Run(script);
        Assert.Equal($"{errorId},QubesFirewall.PowerShell.Cmdlets.RepairQubeNetVmCommand", Assert.Single(run.Errors).FullyQualifiedErrorId);
        _root.AssertUnchanged(before);
    }
}

public sealed class OfflineNetVmRepairCmdletTests : NetVmRepairCmdletTests
{
    protected override PsRun Run(string script) => PowerShellHost.Run(script, _root.Path);

    protected override void SetPowerState(string qube, PowerState state) =>
        File.WriteAllText(Path.Combine(_root.Path, "qubesfirewall-state", qube, "power-state"), state + "\n");

    [Fact]
    public void The_reattach_is_recorded_in_the_state_folder()
    {
        Run("Repair-QubeNetVm -NetVM sys-firewall -Confirm:$false").AssertNoErrors();
        var log = File.ReadAllText(Path.Combine(_root.Path, "qubesfirewall-state", "personal", "applied.log"));
        Assert.Contains("netvm re-attached to sys-firewall (qvm-prefs personal netvm sys-firewall; qvm-prefs --default personal netvm)", log);
        Assert.Contains("/qubes-firewall/10.137.0.10/policy\tdrop", File.ReadAllText(Path.Combine(_root.Path, "qubesfirewall-state", "sys-firewall", "qubesdb.txt")));
    }
}

[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class LiveNetVmRepairCmdletTests : NetVmRepairCmdletTests
{
    private readonly LiveServer _live;
    private FakeQubesd Server => _live.Server;

    public LiveNetVmRepairCmdletTests()
    {
        _live = new LiveServer(_root.Path);
    }

    public override void Dispose()
    {
        _live.Dispose();
        base.Dispose();
    }

    protected override PsRun Run(string script) => _live.Run(script);

    protected override void SetPowerState(string qube, PowerState state) => Server.SetPowerState(qube, state);

    private IEnumerable<string> Changes() => Server.Calls
        .Where(c => c.Method is "admin.vm.property.Set" or "admin.vm.property.Reset" or "admin.vm.Start")
        .Select(c => Encoding.ASCII.GetString(c.Raw));

    [Fact]
    public void The_exact_calls_in_order()
    {
        SetPowerState("sys-firewall", PowerState.Halted);
        Server.ClearCalls();
        Run("Repair-QubeNetVm -Start -Confirm:$false").AssertNoErrors();
        Assert.Equal(QubesFirewall.Tests.Shared.SampleRepairCalls.StartSysFirewallThenReattach, Changes());
        // One inventory read (list, one GetAll per qube) before the changes, nothing else.
        var qubes = Server.CountCalls("admin.vm.property.GetAll");
        Assert.Equal(qubes + 1 + 5, Server.Calls.Count);
    }

    [Fact]
    public void WhatIf_sends_no_change()
    {
        Server.ClearCalls();
        Run("Repair-QubeNetVm -Start -WhatIf").AssertNoErrors();
        Assert.Empty(Changes());
    }
}
