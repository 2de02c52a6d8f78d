using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;
using static QubesFirewall.Engine.Tests.TestQubes;

namespace QubesFirewall.Engine.Tests;

/// <summary>
/// Repair-QubeNetVm's plan on hand-made systems. The qubes.xml order below deliberately lists clients
/// before their network qubes, so the expected order (worked out by hand) shows the sort: chain depth
/// first (sys-firewall 1 hop from sys-net; work, personal, sys-whonix 2; anon 3), then qubes.xml order.
/// </summary>
public sealed class NetVmRepairPlannerTests
{
    private static readonly Q[] Classic =
    [
        new("anon", 6, NetVm: "sys-whonix"),
        new("work", 5),                                  // follows default_netvm (sys-firewall)
        new("personal", 7),                              // follows default_netvm, paused
        new("sys-whonix", 4, NetVm: "sys-firewall", Provides: true),
        new("sys-firewall", 3, NetVm: "sys-net", Provides: true),
        new("sys-net", 2, NetVm: "", Provides: true),
        new("vault", 8, NetVm: ""),                      // running, but no network
        new("untrusted", 9),                             // halted: nothing to re-attach
    ];

    private static Dictionary<string, PowerState> AllUp() => new()
    {
        ["anon"] = PowerState.Running, ["work"] = PowerState.Running, ["personal"] = PowerState.Paused,
        ["sys-whonix"] = PowerState.Running, ["sys-firewall"] = PowerState.Running, ["sys-net"] = PowerState.Running,
        ["vault"] = PowerState.Running, ["untrusted"] = PowerState.Halted,
    };

    private static List<string> Describe(NetVmRepairPlan plan) =>
        plan.Steps.Select(s => $"{s.Kind} {s.VMName}" + (s.Calls.Count == 0 ? "" : ": " + string.Join("; ", s.Calls.Select(c => c.Command)))).ToList();

    [Fact]
    public void Every_network_qube_parents_first_then_qubes_xml_order()
    {
        var plan = NetVmRepairPlanner.Plan(Inventory("sys-firewall", AllUp(), Classic), null, start: false);
        Assert.Equal(
        [
            "Reattach sys-firewall: qvm-prefs sys-firewall netvm sys-net",
            "Reattach work: qvm-prefs work netvm sys-firewall; qvm-prefs --default work netvm",
            "Skip personal",
            "Reattach sys-whonix: qvm-prefs sys-whonix netvm sys-firewall",
            "Reattach anon: qvm-prefs anon netvm sys-whonix",
        ], Describe(plan));
        Assert.Equal([1, 2, 2, 2, 3], plan.Steps.Select(s => s.Depth));
        Assert.Contains("paused", plan.Steps[2].Reason);
        Assert.Contains("unpaused", plan.Steps[2].Reason);
    }

    [Fact]
    public void The_calls_as_the_live_backend_makes_them()
    {
        var plan = NetVmRepairPlanner.Plan(Inventory("sys-firewall", AllUp(), Classic), ["sys-firewall"], start: false);
        var work = plan.Steps.Single(s => s.VMName == "work");
        Assert.Equal(["admin.vm.property.Set+netvm work 'sys-firewall'", "admin.vm.property.Reset+netvm work"], work.Calls.Select(c => c.AdminApiCall));
        Assert.Equal("work (netvm sys-firewall)", work.Target);
        Assert.Equal("Re-attach to its network qube: qvm-prefs work netvm sys-firewall; qvm-prefs --default work netvm", work.Description);
    }

    [Fact]
    public void One_network_qube_means_its_direct_clients_only()
    {
        var inventory = Inventory("sys-firewall", AllUp(), Classic);
        Assert.Equal(["Reattach anon: qvm-prefs anon netvm sys-whonix"], Describe(NetVmRepairPlanner.Plan(inventory, ["sys-whonix"], false)));
        Assert.Equal(
        [
            "Reattach work: qvm-prefs work netvm sys-firewall; qvm-prefs --default work netvm",
            "Skip personal",
            "Reattach sys-whonix: qvm-prefs sys-whonix netvm sys-firewall",
        ], Describe(NetVmRepairPlanner.Plan(inventory, ["sys-firewall"], false)));
        // Two network qubes: still one global order.
        Assert.Equal(
        [
            "Reattach sys-firewall: qvm-prefs sys-firewall netvm sys-net",
            "Reattach anon: qvm-prefs anon netvm sys-whonix",
        ], Describe(NetVmRepairPlanner.Plan(inventory, ["sys-whonix", "sys-net"], false)));
    }

    [Fact]
    public void A_halted_network_qube_refuses_its_clients_without_start()
    {
        var states = AllUp();
        states["sys-firewall"] = PowerState.Halted;
        var plan = NetVmRepairPlanner.Plan(Inventory("sys-firewall", states, Classic), null, start: false);
        // sys-firewall itself is halted (not re-attached); sys-whonix still runs, so anon is re-attached to it.
        Assert.Equal(["Refuse work", "Skip personal", "Refuse sys-whonix", "Reattach anon: qvm-prefs anon netvm sys-whonix"], Describe(plan));
        Assert.Contains("'sys-firewall' is halted", plan.Steps[0].Reason);
        Assert.Contains("-Start", plan.Steps[0].Reason);
        Assert.Contains("qvm-start sys-firewall", plan.Steps[0].Reason);
    }

    [Fact]
    public void With_start_the_halted_chain_starts_first_in_chain_order()
    {
        var states = AllUp();
        states["sys-firewall"] = PowerState.Halted;
        states["sys-net"] = PowerState.Halted;
        var plan = NetVmRepairPlanner.Plan(Inventory("sys-firewall", states, Classic), null, start: true);
        Assert.Equal(
        [
            "Start sys-net: qvm-start sys-net",
            "Start sys-firewall: qvm-start sys-firewall",
            "Reattach work: qvm-prefs work netvm sys-firewall; qvm-prefs --default work netvm",
            "Skip personal",
            "Reattach sys-whonix: qvm-prefs sys-whonix netvm sys-firewall",
            "Reattach anon: qvm-prefs anon netvm sys-whonix",
        ], Describe(plan));
        Assert.Equal([null, "sys-net", "sys-firewall", null, "sys-firewall", null], plan.Steps.Select(s => s.DependsOn));
        Assert.Equal("Start the halted network qube: qvm-start sys-net", plan.Steps[0].Description);
    }

    [Fact]
    public void A_paused_network_qube_refuses_even_with_start()
    {
        var states = AllUp();
        states["sys-whonix"] = PowerState.Paused;
        var plan = NetVmRepairPlanner.Plan(Inventory("sys-firewall", states, Classic), ["sys-whonix"], start: true);
        var step = Assert.Single(plan.Steps);
        Assert.Equal(NetVmRepairStepKind.Refuse, step.Kind);
        Assert.Contains("qvm-unpause sys-whonix", step.Reason);
    }

    [Fact]
    public void Nothing_runs_nothing_to_do()
    {
        var plan = NetVmRepairPlanner.Plan(Inventory("sys-firewall", new Dictionary<string, PowerState>(), Classic), null, start: true);
        Assert.Empty(plan.Steps);
    }

    [Theory]
    [InlineData("nosuch", "QubeNotFound")]
    [InlineData("work", "NotANetworkQube")]
    [InlineData("a;b", "InvalidQubeName")]
    public void A_bad_network_qube_name_is_refused(string name, string errorId)
    {
        var ex = Assert.Throws<QubesFirewallException>(() => NetVmRepairPlanner.Plan(Inventory("sys-firewall", AllUp(), Classic), [name], false));
        Assert.Equal(errorId, ex.ErrorId);
    }

    [Fact]
    public void The_plan_is_deterministic()
    {
        var a = NetVmRepairPlanner.Plan(Inventory("sys-firewall", AllUp(), Classic), null, true);
        var b = NetVmRepairPlanner.Plan(Inventory("sys-firewall", AllUp(), Classic), null, true);
        Assert.Equal(Describe(a), Describe(b));
        Assert.Equal(a.Steps.Select(s => s.Reason), b.Steps.Select(s => s.Reason));
    }
}
