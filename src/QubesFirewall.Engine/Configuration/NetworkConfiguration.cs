using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.Engine.Configuration;

/// <summary>How a configuration sets a qube's netvm.</summary>
public enum NetVmMode
{
    /// <summary>Follow the global <c>default_netvm</c> (the property reset): written <c>(default)</c>.</summary>
    Default,
    /// <summary>No network: the property set to the empty value, written <c>''</c>.</summary>
    None,
    /// <summary>A named network qube.</summary>
    Qube,
}

/// <summary>A qube's netvm as a configuration declares it.</summary>
public sealed record NetVmSetting(NetVmMode Mode, string? Name = null)
{
    public const string DefaultText = "(default)";

    public static NetVmSetting Default { get; } = new(NetVmMode.Default);

    public static NetVmSetting None { get; } = new(NetVmMode.None);

    /// <summary>The file's spelling: <c>(default)</c>, the empty string, or the qube's name.</summary>
    public string Text => Mode switch
    {
        NetVmMode.Default => DefaultText,
        NetVmMode.None => "",
        _ => Name!,
    };

    /// <summary>The setting a qube has now (dom0 and remote qubes: None).</summary>
    public static NetVmSetting Of(Qube qube) => qube.NetVmSource switch
    {
        NetVmSource.Default => Default,
        NetVmSource.Explicit when qube.NetVM is { } name => new NetVmSetting(NetVmMode.Qube, name),
        _ => None,
    };

    public override string ToString() => Mode == NetVmMode.None ? "(none)" : Text;
}

/// <summary>
/// What a configuration declares for one qube. A member left null is not managed: the file does not name it,
/// so it is neither compared nor changed. Lists are in the file's order (rules) or sorted (the rest).
/// </summary>
public sealed record QubeConfiguration
{
    public required string Name { get; init; }

    /// <summary>The line of the qube's entry in the file (0 when it did not come from a file).</summary>
    public int Line { get; init; }

    public NetVmSetting? NetVM { get; init; }

    public IPv6Setting? IPv6 { get; init; }

    /// <summary>The qube's Qubes firewall, in order (the rules qubesd's Get shows).</summary>
    public IReadOnlyList<FirewallRule>? Rules { get; init; }

    /// <summary>The port forwards to this qube (declared on it).</summary>
    public IReadOnlyList<PortForward>? Forwards { get; init; }

    /// <summary>The inter-qube links from this qube.</summary>
    public IReadOnlyList<InterVmLink>? Links { get; init; }

    /// <summary>The qubes.ConnectTCP bindings with this qube as client.</summary>
    public IReadOnlyList<TcpBinding>? Bindings { get; init; }

    public override string ToString() => Name;
}

/// <summary>
/// The declared network state of a set of qubes (Export-, Test-, Invoke-QubeNetworkConfiguration): per qube its
/// netvm, ipv6 feature, rules, port forwards, links and bindings. Qubes by name, ordinal order; no uuids (the same
/// file is meant for several machines).
/// </summary>
public sealed record NetworkConfiguration(IReadOnlyList<QubeConfiguration> Qubes)
{
    /// <summary>The version of the file format this module writes and reads.</summary>
    public const int FormatVersion = 1;

    public QubeConfiguration? Find(string name) => Qubes.FirstOrDefault(q => q.Name == name);
}

/// <summary>The two file formats.</summary>
public enum ConfigurationFormat
{
    /// <summary>A PowerShell data file (hashtables, arrays, single-quoted strings), read as data only.</summary>
    Psd1,
    Json,
}
