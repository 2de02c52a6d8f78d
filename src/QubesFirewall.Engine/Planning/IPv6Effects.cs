using QubesFirewall.Engine.Model;

namespace QubesFirewall.Engine.Planning;

/// <summary>
/// What a change of an <c>ipv6</c> feature does to what the module deployed: the qubes whose IPv6 turns on or off
/// (the qube and the qubes that inherit from it), and the declared links and port forwards that cross one of them.
/// Their IPv6 part is derived from the features when they are planned, so Set-QubeIPv6 plans them again with the
/// feature change, in the same plan: a link made over IPv4 gets its IPv6 part when IPv6 turns on upstream, instead
/// of looking broken.
/// </summary>
public sealed record IPv6Effects(IReadOnlyList<string> Flipped, IReadOnlyList<InterVmLink> Links, IReadOnlyList<PortForward> Forwards)
{
    public bool IsEmpty => Links.Count == 0 && Forwards.Count == 0;

    /// <summary>The qubes whose IPv6 changes, and the declarations made again, as the plan shows them.</summary>
    public static IPv6Effects Of(QubesInventory inventory, IPv6Change change)
    {
        if (!change.IsChange) return new IPv6Effects([], [], []);
        var flipped = inventory.Qubes
            .Where(IPv6Planner.IsNetworked)
            .Where(q => IPv6Planner.Decide(inventory, q).Enabled != IPv6Planner.Decide(inventory, q, change.NewValue, change.VMName).Enabled)
            .Select(q => q.Name).ToHashSet(StringComparer.Ordinal);
        bool Touches(string name) => flipped.Contains(name) || inventory.UpstreamOf(name).Any(q => flipped.Contains(q.Name));
        var links = InterVmLinkPlanner.DeclaredLinks(inventory)
            .Where(l => flipped.Contains(l.From) || flipped.Contains(l.To) || (inventory.Find(l.From)?.NetVM is { } n && flipped.Contains(n)))
            .ToList();
        var forwards = PortForwardDeclaration.ReadAll(inventory, networkedOnly: true)
            .Where(d => d.Forward is not null && Touches(d.VMName))
            .Select(d => d.Forward!).ToList();
        return new IPv6Effects(inventory.Qubes.Select(q => q.Name).Where(flipped.Contains).ToList(), links, forwards);
    }
}
