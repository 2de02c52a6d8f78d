namespace QubesFirewall.Engine.Model;

/// <summary>Every qube of a Qubes system, in qubes.xml order, with the global properties.</summary>
public sealed class QubesInventory
{
    private readonly Dictionary<string, Qube?> _byName;
    private readonly IReadOnlyList<string> _names;
    private readonly Func<string, Qube>? _load;
    private readonly Func<string, QubeGlance>? _glance;
    private IReadOnlyList<Qube>? _qubes;

    public QubesInventory(IReadOnlyList<Qube> qubes, IReadOnlyDictionary<string, string> globalProperties,
        IReadOnlyDictionary<string, string>? labels = null, string? sourcePath = null)
        : this(qubes.Select(q => q.Name).ToList(), null, globalProperties, labels, sourcePath)
    {
        _qubes = qubes;
        foreach (var q in qubes) _byName[q.Name] = q;
    }

    /// <summary>
    /// An inventory whose qubes are read one by one when first asked for (<paramref name="load"/>, e.g. one Admin API
    /// <c>GetAll</c> each): a plan that looks at three qubes reads three, a listing reads them all, each once.
    /// <para><paramref name="glance"/>, when given, tells a qube's class and features without loading it (live: the class from
    /// <c>admin.vm.List</c>, the feature names from one <c>feature.List</c>, no <c>GetAll</c>): the readers of declarations and
    /// agent keys look at every qube's feature names and load only the qubes that have some.</para>
    /// </summary>
    public QubesInventory(IReadOnlyList<string> names, Func<string, Qube>? load, IReadOnlyDictionary<string, string> globalProperties,
        IReadOnlyDictionary<string, string>? labels = null, string? sourcePath = null, Func<string, QubeGlance>? glance = null)
    {
        _names = names;
        _load = load;
        _glance = glance;
        GlobalProperties = globalProperties;
        Labels = labels ?? new Dictionary<string, string>(StringComparer.Ordinal);
        SourcePath = sourcePath;
        _byName = new Dictionary<string, Qube?>(StringComparer.Ordinal);
        foreach (var name in names) _byName[name] = null;
    }

    /// <summary>The qubes in the order qubes.xml lists them (dom0 first when qubes.xml lacks it, as qubesd adds it).</summary>
    public IReadOnlyList<Qube> Qubes => _qubes ??= _names.Select(n => Find(n)!).ToList();

    /// <summary>Every qube's name, in inventory order, without reading any qube.</summary>
    public IReadOnlyList<string> Names => _names;

    /// <summary>Global properties as stored (default_netvm, default_template, default_dispvm, clockvm, updatevm, ...).</summary>
    public IReadOnlyDictionary<string, string> GlobalProperties { get; }

    /// <summary>Label name -> colour as stored (e.g. red -> 0xcc0000).</summary>
    public IReadOnlyDictionary<string, string> Labels { get; }

    /// <summary>The qubes.xml this came from, when it came from a file.</summary>
    public string? SourcePath { get; }

    /// <summary>The global default_netvm (null when unset or empty).</summary>
    public string? DefaultNetVM => GlobalProperties.TryGetValue("default_netvm", out var v) && v.Length > 0 ? v : null;

    /// <summary>The qube with exactly this name (names are case-sensitive), or null.</summary>
    public Qube? Find(string name)
    {
        if (name is null || !_byName.TryGetValue(name, out var qube)) return null;
        return qube ?? (_byName[name] = _load!(name));
    }

    /// <summary>
    /// A qube's class and features without reading the rest of it (see the lazy constructor); null for an unknown name.
    /// An inventory read whole answers from its qubes.
    /// </summary>
    public QubeGlance? Glance(string name)
    {
        if (name is null || !_byName.TryGetValue(name, out var qube)) return null;
        if (qube is null && _glance is not null) return _glance(name);
        var q = Find(name)!;
        return new QubeGlance(q.Class, q.Features);
    }

    /// <summary>The names of the qubes having a feature whose name matches (names only: no other qube is read further), in inventory order.</summary>
    public IEnumerable<string> NamesWithFeature(Func<string, bool> match, bool skipAdminVm = false)
    {
        foreach (var name in _names)
        {
            var glance = Glance(name)!;
            if (skipAdminVm && glance.Class == QubeClass.AdminVM) continue;
            if (glance.Features.Keys.Any(match)) yield return name;
        }
    }

    /// <summary>The qube with this name, or a QubeNotFound error.</summary>
    public Qube Get(string name) => Find(name) ?? throw new QubesFirewallException("QubeNotFound", FailureKind.ObjectNotFound,
        $"There is no qube named '{Formats.QubesXml.Printable(name)}'" + (SourcePath is null ? "." : $" in {SourcePath}."), name);

    /// <summary>Qubes whose effective netvm is <paramref name="netVm"/>, in inventory order (qubesd's connected_vms).</summary>
    public IReadOnlyList<Qube> ClientsOf(string netVm) =>
        Qubes.Where(q => string.Equals(q.NetVM, netVm, StringComparison.Ordinal)).ToList();

    /// <summary>The network chain upstream of a qube: its netvm, that one's netvm, ... (loops and unknown names stop it).</summary>
    public IReadOnlyList<Qube> UpstreamOf(string name)
    {
        var chain = new List<Qube>();
        var seen = new HashSet<string>(StringComparer.Ordinal) { name };
        var current = Find(name);
        while (current?.NetVM is { } next && seen.Add(next) && Find(next) is { } up)
        {
            chain.Add(up);
            current = up;
        }
        return chain;
    }

    /// <summary>
    /// A copy in which one qube is replaced by <paramref name="change"/> of it; the other qubes are shared, read when
    /// first asked for (nothing is read to make the copy).
    /// </summary>
    public QubesInventory WithQube(string name, Func<Qube, Qube> change)
    {
        Qube? changed = null;
        Qube Changed() => changed ??= change(Get(name));
        return new QubesInventory(_names, n => n == name ? Changed() : Find(n)!, GlobalProperties, Labels, SourcePath,
            n => n == name ? new QubeGlance(Changed().Class, Changed().Features) : Glance(n)!);
    }

    /// <summary>A copy with each qube's <see cref="Qube.State"/> taken from <paramref name="stateOf"/>.</summary>
    public QubesInventory WithPowerStates(Func<string, PowerState> stateOf) =>
        new(Qubes.Select(q => q with { State = stateOf(q.Name) }).ToList(), GlobalProperties, Labels, SourcePath);
}

/// <summary>What can be seen of a qube without reading all of it: its class (from the list) and its features (names read on first use, values each when asked).</summary>
public sealed record QubeGlance(QubeClass Class, IReadOnlyDictionary<string, string> Features);
