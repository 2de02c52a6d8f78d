using QubesFirewall.Engine.Model;

namespace QubesFirewall.Engine.Planning;

/// <summary>What -AllowFrom said: nothing (<see cref="Given"/> false), the word Any (given, no sources: everyone), or source networks.</summary>
public sealed record AllowFromInput(bool Given, IReadOnlyList<string> Sources)
{
    public bool IsAny => Given && Sources.Count == 0;
}

/// <summary>
/// A forward open to everyone must be asked for by name: <c>-AllowFrom Any</c> (<c>AllowFrom = 'Any'</c> in a
/// configuration file or a CSV column). Without any -AllowFrom, a forward that would be open is refused with that
/// hint; -Force never stands for it.
/// </summary>
public static class PortForwardAllowFrom
{
    public const string Any = "Any";

    public static AllowFromInput Read(IReadOnlyList<string>? values)
    {
        if (values is null || values.Count == 0) return new AllowFromInput(false, []);
        var any = values.Count(v => v is not null && v.Trim().Equals(Any, StringComparison.OrdinalIgnoreCase));
        if (any == 0) return new AllowFromInput(true, values);
        if (values.Count > 1)
            throw QubesFirewallException.Invalid(ErrorIds.InvalidAllowFrom,
                "'Any' opens the port to everyone and stands alone: give either -AllowFrom Any or the source networks, not both. Nothing was changed.", values);
        return new AllowFromInput(true, []);
    }

    /// <summary>Who can connect to a forward open to everyone.</summary>
    public static string OpenWarning(PortForward forward, PortForwardPlan plan) => $"{forward.Text} is open to everyone: {Who(forward, plan)}";

    private static string Who(PortForward forward, PortForwardPlan plan) => forward.Type == ForwardType.External
        ? $"anyone who can reach {plan.Hops[0]} on its outside network{(forward.Interface is null ? "s" : " " + forward.Interface)} (a public Wi-Fi, the whole LAN, the internet if it has a public address) can connect to {forward.VMName}."
        : $"every qube whose network qube is {plan.Hops[0]}{(forward.Interface is null ? "" : $" and everything arriving on its {forward.Interface}")} can connect to {forward.VMName}.";

    public static QubesFirewallException Required(PortForward forward, PortForwardPlan plan) =>
        new(ErrorIds.AllowFromRequired, FailureKind.InvalidArgument,
            $"{forward.Text} has no -AllowFrom, so it would be open to everyone: {Who(forward, plan)} " +
            "Give the sources allowed, for example -AllowFrom 192.168.1.0/24, or -AllowFrom Any to open it to everyone on purpose " +
            "(then asked for confirmation as a high-impact change; a script adds -Confirm:$false). Nothing was changed.", forward.Text);
}
