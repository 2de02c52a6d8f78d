using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Model;

namespace QubesFirewall.Engine.Deployment;

/// <summary>
/// Qubes a change must reach: on the live backend a qube's files are read and written inside it and its
/// rules loaded there, so it must run. Refused by name unless the user asked to start them (-Start); then
/// started in the order given: the network chain's order, outermost network qube first (qubesd starts a
/// qube's netvm first anyway), so each qube finds its upstream running.
/// </summary>
public static class QubeStarter
{
    /// <summary>The qubes of <paramref name="needed"/> (in that order, once each) that are not running.</summary>
    public static IReadOnlyList<Qube> NotRunning(QubesInventory inventory, IEnumerable<string> needed) =>
        needed.Distinct(StringComparer.Ordinal).Select(inventory.Get).Where(q => q.State != PowerState.Running).ToList();

    /// <summary>The error for qubes that must run: names each with its state; says how to proceed.</summary>
    public static QubesFirewallException Refusal(IReadOnlyList<Qube> notRunning, string what)
    {
        var list = string.Join(", ", notRunning.Select(q => $"{q.Name} ({q.State.ToString().ToLowerInvariant()})"));
        var hint = notRunning.All(q => q.State == PowerState.Halted)
            ? "Start them first (qvm-start), or add -Start to have them started in network order (outermost network qube first)."
            : "Only halted qubes can be started; resume or unpause the others first.";
        return new QubesFirewallException(ErrorIds.QubesNotRunning, FailureKind.ResourceUnavailable,
            $"These qubes must be running to {what} (their files are read and written inside them, their rules loaded now): {list}. {hint} Nothing was changed.",
            notRunning.Select(q => q.Name).ToList());
    }

    /// <summary>Starts the halted qubes in the order given; refuses (before starting any) when one is paused or in another state.</summary>
    public static IReadOnlyList<string> Start(IQubesBackend backend, IReadOnlyList<Qube> notRunning, string what)
    {
        if (notRunning.Any(q => q.State != PowerState.Halted)) throw Refusal(notRunning, what);
        var started = new List<string>();
        foreach (var qube in notRunning)
        {
            backend.StartQube(qube.Name);
            started.Add(qube.Name);
        }
        return started;
    }
}
