namespace QubesFirewall.Engine.Model;

/// <summary>
/// A declared port forward as Get-QubePortForward shows it: the declaration's values flattened under
/// the names of Add-QubePortForward's parameters (so objects pipe back into Add- and Remove-), the
/// network qubes it crosses now, and whether it has expired.
/// </summary>
public sealed class QubePortForward
{
    public QubePortForward(PortForwardDeclaration declaration, PortForward? forward, IReadOnlyList<string> hops, bool isExpired, string? problem, bool ipv6 = false)
    {
        IPv6 = ipv6;
        VMName = declaration.VMName;
        FeatureName = declaration.FeatureName;
        FeatureValue = declaration.FeatureValue;
        Forward = forward;
        Hops = hops.ToArray();
        IsExpired = isExpired;
        Problem = problem;
        Ownership = declaration.Ownership;
        if (forward is null && PortForwardFeature.TryParseName(declaration.FeatureName, out var p, out var n, lenient: true))
            (Protocol, Port) = (p, n);
        else if (forward is not null)
            (Protocol, Port) = (forward.Protocol, forward.Port);
    }

    /// <summary>The parsed declaration (null when the feature cannot be read).</summary>
    internal PortForward? Forward { get; }

    /// <summary>The target qube (the one whose feature declares the forward).</summary>
    public string VMName { get; }

    public ForwardProtocol? Protocol { get; }

    /// <summary>The port opened on the network side.</summary>
    public int? Port { get; }

    /// <summary>The port in the target qube.</summary>
    public int? TargetPort => Forward?.TargetPort;

    public ForwardType? Type => Forward?.Type;

    /// <summary>Allowed sources in CIDR form; empty = anyone who reaches the first hop.</summary>
    public string[] AllowFrom => Forward?.AllowFrom.Select(h => h.Value).ToArray() ?? [];

    public string? Interface => Forward?.Interface;

    /// <summary>When the forward stops matching, in local time; null = never.</summary>
    public DateTime? Expire => Forward?.ExpireTime?.LocalDateTime;

    public bool IsExpired { get; }

    /// <summary>True when the forward is generated for IPv6 too: every qube on the way has IPv6, and -AllowFrom (if any) lists IPv6 sources.</summary>
    public bool IPv6 { get; }

    public string? Comment => Forward?.Comment;

    /// <summary>The network qubes the forward crosses now, outermost first (empty when that cannot be resolved: see <see cref="Problem"/>).</summary>
    public string[] Hops { get; }

    /// <summary>The path of the traffic: <c>sys-net -> sys-firewall -> work</c>.</summary>
    public string Path => Hops.Length == 0 ? "" : string.Join(" -> ", Hops.Append(VMName));

    public string FeatureName { get; }

    public string FeatureValue { get; }

    /// <summary>False when the feature cannot be read (see <see cref="Problem"/>); nothing is generated for it.</summary>
    public bool IsValid => Forward is not null;

    /// <summary>Why the declaration cannot be read, or why its network chain cannot be resolved now; null when all is well.</summary>
    public string? Problem { get; }

    /// <summary>Bound to its qube's uuid, Legacy (no uuid yet: adopt it by piping it to Add-QubePortForward), or Copied (never deployed; see Problem).</summary>
    public DeclarationOwnership Ownership { get; }

    /// <summary><c>tcp/443 -> work:8443</c></summary>
    public string Text => Forward?.Text ?? $"{FeatureName} of {VMName} (invalid)";

    public override string ToString() => Text;
}
