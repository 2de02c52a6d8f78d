namespace QubesFirewall.Engine.Model;

/// <summary>
/// The qube classes qubesd knows (its <c>qubes.vm</c> entry points). A class this module does not
/// know is read as <see cref="AppVM"/>, with the class name as written kept in <see cref="Qube.ClassName"/>.
/// </summary>
public enum QubeClass
{
    AdminVM,
    AppVM,
    TemplateVM,
    StandaloneVM,
    DispVM,
    /// <summary>R4.3: a qube on another host, with no local networking (no netvm, no IP).</summary>
    RemoteVM,
}

/// <summary>Power state as qubesd reports it (<c>admin.vm.CurrentState</c>); Unknown when nobody said.</summary>
public enum PowerState
{
    Unknown,
    Halted,
    Running,
    Paused,
    Transient,
    Suspended,
    Dying,
    Crashed,
    /// <summary>Shutting down (qubesd's "Halting").</summary>
    Halting,
}

/// <summary>Where a qube's <see cref="Qube.NetVM"/> comes from.</summary>
public enum NetVmSource
{
    /// <summary>The qube's own <c>netvm</c> property names a qube.</summary>
    Explicit,

    /// <summary>
    /// No <c>netvm</c> property: the class default applies — the global <c>default_netvm</c>
    /// for AppVM, StandaloneVM and DispVM (even those that provide network), nothing for TemplateVM.
    /// </summary>
    Default,

    /// <summary>
    /// No network by configuration: the <c>netvm</c> property is set to the empty value, the class has
    /// no netvm at all (AdminVM, RemoteVM), or qubesd would break a netvm loop here when it loads.
    /// </summary>
    None,
}

/// <summary>
/// One qube as qubesd sees it in qubes.xml: identity, class, effective network settings (as qubesd
/// computes them) and the raw properties and features.
/// </summary>
public sealed record Qube
{
    public required string Name { get; init; }

    public int Qid { get; init; }

    public QubeClass Class { get; init; } = QubeClass.AppVM;

    /// <summary>The class as written in qubes.xml (differs from <see cref="Class"/> only for classes this module does not know).</summary>
    public string ClassName { get; init; } = nameof(QubeClass.AppVM);

    public PowerState State { get; init; } = PowerState.Unknown;

    /// <summary>The effective network qube's name; null = no network.</summary>
    public string? NetVM { get; init; }

    public NetVmSource NetVmSource { get; init; } = NetVmSource.Default;

    /// <summary>IPv4 address as qubesd computes it (null when the qube is not networked).</summary>
    public string? IP { get; init; }

    /// <summary>IPv6 address, only when the <c>ipv6</c> feature enables it along the netvm chain.</summary>
    public string? IPv6 { get; init; }

    public bool ProvidesNetwork { get; init; }

    public string? Template { get; init; }

    /// <summary>Label name (red, orange, ..., black).</summary>
    public string? Label { get; init; }

    /// <summary>qubesd's <c>uuid</c> property (write-once, never cloned); null when the root has none. Declarations carry it.</summary>
    public string? Uuid { get; init; }

    /// <summary>Disposable id (DispVM), from which its 10.138.x.y address comes.</summary>
    public int? DispId { get; init; }

    public bool TemplateForDispVMs { get; init; }

    /// <summary>Effective default disposable template: own property, else the DispVM's template, else the global default_dispvm.</summary>
    public string? DefaultDispVM { get; init; }

    public IReadOnlyDictionary<string, string> Features { get; init; } = EmptyMap;

    /// <summary>Properties exactly as stored in qubes.xml (only those set explicitly; a reference stored as <c>ref=</c> gives its value).</summary>
    public IReadOnlyDictionary<string, string> Properties { get; init; } = EmptyMap;

    public IReadOnlyList<string> Tags { get; init; } = [];

    /// <summary>The qube's directory relative to the Qubes root (appvms/NAME or vm-templates/NAME); null for dom0 and remote qubes.</summary>
    public string? RelativeDirectory { get; init; }

    public override string ToString() => Name;

    /// <summary>
    /// The features whose names match, in name order: the names are looked at first, so the live backend reads the
    /// values of these features only (not every feature of the qube).
    /// </summary>
    public IEnumerable<KeyValuePair<string, string>> FeaturesNamed(Func<string, bool> match) => FeaturesNamed(Features, match);

    /// <summary>As <see cref="FeaturesNamed(Func{string, bool})"/>, for features seen without the rest of their qube (<see cref="QubesInventory.Glance"/>).</summary>
    public static IEnumerable<KeyValuePair<string, string>> FeaturesNamed(IReadOnlyDictionary<string, string> features, Func<string, bool> match)
    {
        foreach (var name in features.Keys.Where(match).Order(StringComparer.Ordinal).ToList())
            if (features.TryGetValue(name, out var value)) yield return new(name, value);
    }

    private static readonly IReadOnlyDictionary<string, string> EmptyMap = new Dictionary<string, string>(StringComparer.Ordinal);
}
