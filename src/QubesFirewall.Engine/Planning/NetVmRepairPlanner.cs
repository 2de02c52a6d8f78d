using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Deployment;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Validation;

namespace QubesFirewall.Engine.Planning;

/// <summary>What Repair-QubeNetVm did for one qube.</summary>
public enum NetVmRepairAction
{
    /// <summary>netvm set to its current value (detach, attach, firewall reload), and reset to the default again for a qube that follows default_netvm.</summary>
    Reattached,
    /// <summary>Nothing done, on purpose (a paused qube: qubesd re-attaches it when it is unpaused).</summary>
    Skipped,
    /// <summary>A halted network qube started (with -Start) so that its clients can be re-attached.</summary>
    Started,
    /// <summary>Refused (its network qube is halted and -Start was not given) or a call failed.</summary>
    Failed,
}

/// <summary>What a planned step is.</summary>
public enum NetVmRepairStepKind { Start, Reattach, Skip, Refuse }

/// <summary>The backend operations a step makes.</summary>
public enum NetVmRepairCallKind
{
    /// <summary><c>admin.vm.property.Set</c> netvm (offline: qubes.xml).</summary>
    SetNetVm,
    /// <summary><c>admin.vm.property.Reset</c> netvm (offline: the property removed from qubes.xml).</summary>
    ResetNetVm,
    /// <summary><c>admin.vm.Start</c> (offline: the power state in the state folder).</summary>
    Start,
}

/// <summary>One backend operation of a step, with the dom0 command that does the same.</summary>
public sealed record NetVmRepairCall(NetVmRepairCallKind Kind, string VMName, string? Value = null)
{
    /// <summary>The equivalent dom0 command line, as -WhatIf and the result show it.</summary>
    public string Command => Kind switch
    {
        NetVmRepairCallKind.SetNetVm => $"qvm-prefs {VMName} netvm {Value}",
        NetVmRepairCallKind.ResetNetVm => $"qvm-prefs --default {VMName} netvm",
        _ => $"qvm-start {VMName}",
    };

    /// <summary>The Admin API call the live backend makes.</summary>
    public string AdminApiCall => Kind switch
    {
        NetVmRepairCallKind.SetNetVm => $"admin.vm.property.Set+netvm {VMName} '{Value}'",
        NetVmRepairCallKind.ResetNetVm => $"admin.vm.property.Reset+netvm {VMName}",
        _ => $"admin.vm.Start {VMName}",
    };

    public override string ToString() => Command;
}

/// <summary>
/// One planned step: start a network qube, re-attach a client, or a client left alone (skipped
/// or refused) with the reason. <see cref="DependsOn"/> names a network qube started by an earlier
/// step of the same plan: if that start fails, this step fails without a call.
/// </summary>
public sealed record NetVmRepairStep(
    NetVmRepairStepKind Kind,
    string VMName,
    string? NetVM,
    int Depth,
    IReadOnlyList<NetVmRepairCall> Calls,
    string Reason,
    string? DependsOn = null)
{
    /// <summary>The words ShouldProcess shows as the target.</summary>
    public string Target => Kind == NetVmRepairStepKind.Start ? VMName : $"{VMName} (netvm {NetVM})";

    /// <summary>The words the plan shows for the step: what it does and the exact calls.</summary>
    public string Description => Kind switch
    {
        NetVmRepairStepKind.Start => "Start the halted network qube: " + string.Join("; ", Calls.Select(c => c.Command)),
        _ => "Re-attach to its network qube: " + string.Join("; ", Calls.Select(c => c.Command)),
    };

    public override string ToString() => $"{Kind} {Target}: {string.Join("; ", Calls.Select(c => c.Command))}";
}

/// <summary>The ordered steps of a repair: network qubes to start and clients to re-attach, parents first.</summary>
public sealed record NetVmRepairPlan(IReadOnlyList<NetVmRepairStep> Steps);

/// <summary>One result object per qube, as Repair-QubeNetVm returns them.</summary>
public sealed record NetVmRepairResult(string VMName, string? NetVM, NetVmRepairAction Action, string Reason, IReadOnlyList<string> Commands)
{
    public override string ToString() => $"{VMName}: {Action} ({Reason})";
}

/// <summary>
/// Plans and runs what <c>qvm-prefs &lt;qube&gt; netvm &lt;same value&gt;</c> does by hand after a network
/// qube restarted: for every running client of the given network qubes (or of every network qube),
/// set netvm to its current value, which makes qubesd detach the qube, attach it again and reload its
/// firewall in the network qube (core-admin <c>qubes/vm/mix/net.py</c>: the pre-set and set handlers of
/// netvm fire even when the value does not change). A qube that follows <c>default_netvm</c> gets the
/// same value set explicitly and is then reset to the default: the reset fires nothing when the
/// default equals the current value, and the qube follows <c>default_netvm</c> again.
/// <para>
/// Order: network qubes before their clients, by chain depth (sys-firewall, one hop from sys-net,
/// before its own clients; sys-whonix, behind sys-firewall, after it), then in qubes.xml order.
/// Paused (and suspended) qubes are skipped: qubesd re-attaches a paused qube when it is unpaused.
/// A running qube cannot be attached to a network qube that is not running (qubesd refuses with
/// "Cannot dynamically attach to stopped qube"): such clients are refused unless the plan may start
/// network qubes, which are then started first, in chain order. Planning is pure: the same inventory
/// (power states included) and request give the same plan.
/// </para>
/// </summary>
public static class NetVmRepairPlanner
{
    /// <param name="inventory">The qubes with their power states.</param>
    /// <param name="netVms">Only clients of these network qubes (their direct clients); null or empty: every network qube.</param>
    /// <param name="start">Start halted network qubes (and their halted upstream) instead of refusing their clients.</param>
    public static NetVmRepairPlan Plan(QubesInventory inventory, IReadOnlyCollection<string>? netVms, bool start)
    {
        var selected = new HashSet<string>(StringComparer.Ordinal);
        foreach (var name in netVms ?? [])
        {
            QubeName.Validate(name);
            var qube = inventory.Find(name) ?? throw QubesInventory.NotFound(name);
            if (!qube.ProvidesNetwork)
                throw QubesFirewallException.Invalid(ErrorIds.NotANetworkQube,
                    $"'{name}' does not provide network (provides_network is False): no qube can have it as netvm. Name a network qube such as sys-firewall, or leave -NetVM out to repair the clients of every network qube.", name);
            selected.Add(qube.Name);
        }

        var order = new Dictionary<string, int>(StringComparer.Ordinal);
        for (var i = 0; i < inventory.Qubes.Count; i++) order[inventory.Qubes[i].Name] = i;
        int Depth(Qube q) => inventory.UpstreamOf(q.Name).Count;

        var steps = new List<NetVmRepairStep>();
        var starts = new Dictionary<string, NetVmRepairStep?>(StringComparer.Ordinal); // network qube -> its start step (null: cannot start)

        // Plans the start of a halted network qube after its own halted upstream; null when it cannot be started.
        NetVmRepairStep? PlanStart(Qube netvm)
        {
            if (starts.TryGetValue(netvm.Name, out var known)) return known;
            starts[netvm.Name] = null; // guards against loops (qubes.xml loops are already broken)
            string? dependsOn = null;
            if (netvm.NetVM is { } upName && inventory.Find(upName) is { } up && !IsRunning(up))
            {
                if (up.State != PowerState.Halted || PlanStart(up) is null) return null;
                dependsOn = up.Name;
            }
            var step = new NetVmRepairStep(NetVmRepairStepKind.Start, netvm.Name, netvm.NetVM, Depth(netvm),
                [new NetVmRepairCall(NetVmRepairCallKind.Start, netvm.Name)],
                $"Started the network qube '{netvm.Name}' (it was halted) so that its running clients can be attached to it.", dependsOn);
            starts[netvm.Name] = step;
            steps.Add(step);
            return step;
        }

        foreach (var client in inventory.Qubes)
        {
            if (client.NetVM is not { } netvmName) continue;
            if (selected.Count > 0 && !selected.Contains(netvmName)) continue;
            if (client.State is not (PowerState.Running or PowerState.Paused or PowerState.Suspended)) continue;
            var depth = Depth(client);

            if (client.State != PowerState.Running)
            {
                var why = client.State == PowerState.Paused
                    ? "The qube is paused: qubesd re-attaches it to its network qube when it is unpaused (qvm-unpause)."
                    : "The qube is suspended: resume it, then run Repair-QubeNetVm again if it has no network.";
                steps.Add(new NetVmRepairStep(NetVmRepairStepKind.Skip, client.Name, netvmName, depth, [], why));
                continue;
            }

            var netvm = inventory.Find(netvmName);
            if (netvm is null)
            {
                steps.Add(new NetVmRepairStep(NetVmRepairStepKind.Refuse, client.Name, netvmName, depth, [],
                    $"Its network qube '{netvmName}' does not exist."));
                continue;
            }

            string? dependsOn = null;
            if (!IsRunning(netvm))
            {
                if (netvm.State == PowerState.Halted && start)
                {
                    if (PlanStart(netvm) is null)
                    {
                        steps.Add(new NetVmRepairStep(NetVmRepairStepKind.Refuse, client.Name, netvmName, depth, [],
                            $"Its network qube '{netvmName}' is halted and cannot be started: a qube upstream of it is neither running nor halted ({DescribeUpstream(inventory, netvm)})."));
                        continue;
                    }
                    dependsOn = netvmName;
                }
                else
                {
                    var why = netvm.State switch
                    {
                        PowerState.Halted => $"Its network qube '{netvmName}' is halted, and a running qube cannot be attached to a halted one. Start it first (qvm-start {netvmName}), or run Repair-QubeNetVm with -Start.",
                        PowerState.Paused => $"Its network qube '{netvmName}' is paused. Unpause it first (qvm-unpause {netvmName}).",
                        _ => $"Its network qube '{netvmName}' is {StateWord(netvm.State)}, not running. Wait until it runs, or start it (qvm-start {netvmName}).",
                    };
                    steps.Add(new NetVmRepairStep(NetVmRepairStepKind.Refuse, client.Name, netvmName, depth, [], why));
                    continue;
                }
            }

            var follower = client.NetVmSource == NetVmSource.Default;
            List<NetVmRepairCall> calls = [new(NetVmRepairCallKind.SetNetVm, client.Name, netvmName)];
            if (follower) calls.Add(new(NetVmRepairCallKind.ResetNetVm, client.Name));
            var reason = $"netvm set to its current value '{netvmName}': qubesd detached the qube, attached it again and reloaded its firewall in {netvmName}"
                + (follower ? "; then reset to the default, so it follows default_netvm again." : ".");
            steps.Add(new NetVmRepairStep(NetVmRepairStepKind.Reattach, client.Name, netvmName, depth, calls, reason, dependsOn));
        }

        // Parents first: chain depth, then qubes.xml order; a start and a client of the same qube
        // cannot tie (a client is one hop deeper than its network qube).
        var ordered = steps
            .OrderBy(s => s.Depth)
            .ThenBy(s => order.GetValueOrDefault(s.VMName, int.MaxValue))
            .ToList();
        return new NetVmRepairPlan(ordered);
    }

    private static bool IsRunning(Qube q) => q.State == PowerState.Running;

    private static string StateWord(PowerState state) => state switch
    {
        PowerState.Unknown => "in an unknown state",
        _ => state.ToString().ToLowerInvariant(),
    };

    private static string DescribeUpstream(QubesInventory inventory, Qube netvm) =>
        string.Join(", ", inventory.UpstreamOf(netvm.Name).Select(q => $"{q.Name} is {StateWord(q.State)}"));

    /// <summary>
    /// The repair as one <see cref="Plan"/>: per qube, in the plan's order, its start or its netvm calls (each a property
    /// change a rollback puts back: a set to the same explicit value changes nothing to put back, a follower's set and
    /// reset are undone by a reset and a set), then the re-attach completed (offline: the firewall reloaded into the
    /// network qube's QubesDB). Skipped and refused qubes have no change; the first failure stops the repair and puts
    /// back every netvm already changed.
    /// </summary>
    public static Plan AsPlan(NetVmRepairPlan plan)
    {
        var asked = plan.Steps.Where(s => s.Kind is NetVmRepairStepKind.Start or NetVmRepairStepKind.Reattach).ToList();
        var steps = new List<DeploymentStep>();
        foreach (var step in asked)
        {
            if (step.Kind == NetVmRepairStepKind.Start)
            {
                steps.Add(DeploymentStep.StartQube(step.VMName, $"{step.Target}: {step.Description}"));
                continue;
            }
            string? before = step.Calls.Any(c => c.Kind == NetVmRepairCallKind.ResetNetVm) ? null : step.NetVM;
            foreach (var call in step.Calls)
            {
                var value = call.Kind == NetVmRepairCallKind.SetNetVm ? call.Value : null;
                steps.Add(DeploymentStep.SetProperty(step.VMName, "netvm", value, before, $"{step.Target}: {call.Command}"));
                before = value;
            }
            steps.Add(new DeploymentStep
            {
                Kind = DeploymentStepKind.NetworkReattached,
                VMName = step.VMName,
                NetVM = step.NetVM,
                Description = $"{step.Target}: re-attached, its firewall reloaded into {step.NetVM}",
                Detail = string.Join("; ", step.Calls.Select(c => c.Command)),
            });
        }
        var reattach = asked.Count(s => s.Kind == NetVmRepairStepKind.Reattach);
        return new Plan
        {
            Operation = PlanOperation.Repair,
            Target = string.Join(", ", asked.Select(s => s.VMName)),
            Purpose = "repair network attachments",
            Description = "Repair network attachments, in this order:",
            Question = $"Re-attach {reattach} qube(s) to their network qube" + (asked.Any(s => s.Kind == NetVmRepairStepKind.Start) ? ", starting the halted network qubes first?" : "?"),
            Steps = steps,
        };
    }

    /// <summary>Plans and deploys a repair; one result per qube (<see cref="Results"/>).</summary>
    public static IReadOnlyList<NetVmRepairResult> Run(IQubesBackend backend, NetVmRepairPlan plan) => Results(plan, AsPlan(plan).Apply(backend).Result);

    /// <summary>
    /// One result per qube of the plan, in its order: skipped and refused qubes as planned; the others (only when
    /// <paramref name="deployed"/>, null when the user declined) from what their steps did: started or re-attached
    /// (the reason says when a later failure put their netvm back), failed with the reason, or not attempted.
    /// </summary>
    public static IReadOnlyList<NetVmRepairResult> Results(NetVmRepairPlan plan, DeploymentResult? deployed)
    {
        var results = new List<NetVmRepairResult>();
        var failedQube = deployed?.Failed?.Step.VMName;
        foreach (var step in plan.Steps)
        {
            switch (step.Kind)
            {
                case NetVmRepairStepKind.Skip:
                    results.Add(new NetVmRepairResult(step.VMName, step.NetVM, NetVmRepairAction.Skipped, step.Reason, []));
                    continue;
                case NetVmRepairStepKind.Refuse:
                    results.Add(new NetVmRepairResult(step.VMName, step.NetVM, NetVmRepairAction.Failed, step.Reason, []));
                    continue;
            }
            if (deployed is null) continue;
            var mine = deployed.For(step.VMName).Where(r => r.Step.Kind is DeploymentStepKind.StartQube or DeploymentStepKind.SetProperty).ToList();
            var commands = step.Calls.Select(c => c.Command).ToList();
            var done = step.Calls.Where((_, i) => i < mine.Count && (mine[i].Status is DeploymentStepStatus.Applied or DeploymentStepStatus.RolledBack
                || (mine[i].Status == DeploymentStepStatus.RollbackFailed && mine[i].Error is null))).Select(c => c.Command).ToList();
            var action = step.Kind == NetVmRepairStepKind.Start ? NetVmRepairAction.Started : NetVmRepairAction.Reattached;
            if (mine.Any(r => r.Status == DeploymentStepStatus.NotReached))
            {
                var why = step.DependsOn is { } d && failedQube == d
                    ? $"Not attempted: the network qube '{d}' could not be started (see its result)."
                    : $"Not attempted: the repair stopped at '{failedQube}' (see its result).";
                results.Add(new NetVmRepairResult(step.VMName, step.NetVM, NetVmRepairAction.Failed, why, done));
            }
            else if (mine.FirstOrDefault(r => r.Status == DeploymentStepStatus.Failed || (r.Status == DeploymentStepStatus.RollbackFailed && r.Error is not null)) is { } failed)
            {
                var call = step.Calls[mine.IndexOf(failed)];
                var back = mine.Any(r => r.Status == DeploymentStepStatus.RollbackFailed) ? "" : Rolled(deployed);
                var reason = call.Kind switch
                {
                    NetVmRepairCallKind.Start => $"Could not start '{call.VMName}': {failed.Message}",
                    NetVmRepairCallKind.ResetNetVm when back.Length == 0 => $"Re-attached, but netvm could not be reset to the default afterwards, so '{call.VMName}' no longer follows default_netvm: {failed.Message} Run 'qvm-prefs --default {call.VMName} netvm'.",
                    NetVmRepairCallKind.ResetNetVm => $"Re-attached, but netvm could not be reset to the default afterwards: {failed.Message}",
                    _ => $"Could not re-attach '{call.VMName}' ({call.Command}): {failed.Message}",
                };
                results.Add(new NetVmRepairResult(step.VMName, step.NetVM, NetVmRepairAction.Failed, reason + back, done));
            }
            else if (mine.Any(r => r.Status == DeploymentStepStatus.RollbackFailed))
                results.Add(new NetVmRepairResult(step.VMName, step.NetVM, NetVmRepairAction.Failed,
                    $"{step.Reason} Its netvm could NOT be put back after '{failedQube}' failed: {mine.First(r => r.Status == DeploymentStepStatus.RollbackFailed).Message} Check it: qvm-prefs {step.VMName} netvm.", commands));
            else if (mine.Any(r => r.Status == DeploymentStepStatus.RolledBack))
                results.Add(new NetVmRepairResult(step.VMName, step.NetVM, action, $"{step.Reason} Its netvm was put back as it was because '{failedQube}' failed.", commands));
            else
                results.Add(new NetVmRepairResult(step.VMName, step.NetVM, action, step.Reason, commands));
        }
        return results;
    }

    private static string Rolled(DeploymentResult deployed) =>
        deployed.FullyRolledBack ? " Every netvm the repair had changed was put back as it was." : "";
}
