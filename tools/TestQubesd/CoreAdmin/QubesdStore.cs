using System.Globalization;
using System.Numerics;
using System.Xml.Linq;

namespace QubesFirewall.TestQubesd.CoreAdmin;

/// <summary>An error qubesd reports as an exception reply (a QubesException subclass), or, with <see cref="Empty"/>, an unhandled one.</summary>
public sealed class QubesdError(string cls, string message, bool empty = false) : Exception(message)
{
    public string Class { get; } = cls;
    public bool Empty { get; } = empty;
}

/// <summary>One qube as qubesd holds it in memory.</summary>
internal sealed class QubesdDomain
{
    public required XElement Element { get; init; }
    public required string Class { get; init; }
    public required string Name { get; init; }
    public int Qid { get; init; }
    public string Uuid { get; init; } = "00000000-0000-0000-0000-000000000000";
    public string PowerState { get; set; } = "Halted";
    /// <summary>Stored properties (what qubes.xml holds), by name.</summary>
    public Dictionary<string, string> Properties { get; } = new(StringComparer.Ordinal);
    /// <summary>Features in insertion order (a Python dict).</summary>
    public OrderedDictionary<string, string> Features { get; } = new(StringComparer.Ordinal);
    public List<string> Tags { get; } = [];
    public List<QubesdRule>? Rules { get; set; }

    public bool IsAdminVm => Class == "AdminVM";
    /// <summary>NetVMMixin is mixed into QubesVM (qubes/vm/qubesvm.py l.337), not AdminVM or RemoteVM.</summary>
    public bool HasNetworking => Class is not ("AdminVM" or "RemoteVM");
    public bool IsDispVm => Class == "DispVM";
    /// <summary>DVMTemplateMixin: AppVM and StandaloneVM (qubes/vm/appvm.py l.43, standalonevm.py l.27).</summary>
    public bool CanBeDispVmTemplate => Class is "AppVM" or "StandaloneVM";
    public int? DispId => Properties.TryGetValue("dispid", out var d) && int.TryParse(d, NumberStyles.None, CultureInfo.InvariantCulture, out var v) ? v : null;

    /// <summary>
    /// <c>is_running</c> (qubes/vm/qubesvm.py l.2549): libvirt's isActive, true for every state but Halted
    /// (and the states of a domain libvirt no longer has).
    /// </summary>
    public bool IsRunning => PowerState is "Running" or "Paused" or "Transient" or "Halting" or "Suspended";
    public bool IsPaused => PowerState == "Paused";
}

/// <summary>
/// qubes.xml as qubesd loads, holds and saves it (core-admin snapshot 1ad5f9b8): labels, global properties
/// and domains with their properties, features and tags; the computed property defaults of
/// <c>qubes/vm/mix/net.py</c>, <c>qubes/vm/qubesvm.py</c> and friends; the property types and value checks of
/// the properties the module sets. Changes are made to the loaded document and the whole file is written
/// again (<c>Qubes.save</c>, qubes/app.py l.1570: qubesd rebuilds it from its objects, which gives the same
/// text for a file qubesd wrote: element order as <c>__xml__</c>, qubes/vm/__init__.py l.364).
/// </summary>
internal sealed class QubesdStore
{
    private readonly XDocument _doc;

    public QubesdStore(string path)
    {
        Path = path;
        _doc = XDocument.Load(path);
        var root = _doc.Root!;
        foreach (var label in root.Elements("labels").Elements("label"))
            Labels[label.Value] = (string?)label.Attribute("color") ?? "";
        foreach (var p in root.Elements("properties").Elements("property"))
            Globals[(string)p.Attribute("name")!] = (string?)p.Attribute("ref") ?? p.Value;
        foreach (var el in root.Elements("domains").Elements("domain"))
        {
            var props = el.Elements("properties").Elements("property")
                .ToDictionary(p => (string)p.Attribute("name")!, p => (string?)p.Attribute("ref") ?? p.Value, StringComparer.Ordinal);
            var cls = (string?)el.Attribute("class") ?? "";
            // AdminVM's name, qid and uuid are fixed defaults (qubes/vm/adminvm.py l.71-85).
            var domain = new QubesdDomain
            {
                Element = el,
                Class = cls,
                Name = cls == "AdminVM" ? "dom0" : props.GetValueOrDefault("name") ?? "",
                Qid = cls == "AdminVM" ? 0 : int.Parse(props.GetValueOrDefault("qid") ?? "-1", CultureInfo.InvariantCulture),
                Uuid = props.GetValueOrDefault("uuid") ?? "00000000-0000-0000-0000-000000000000",
            };
            foreach (var (k, v) in props) domain.Properties[k] = v;
            foreach (var f in el.Elements("features").Elements("feature")) domain.Features[(string)f.Attribute("name")!] = f.Value;
            domain.Tags.AddRange(el.Elements("tags").Elements("tag").Select(t => (string)t.Attribute("name")!));
            Domains.Add(domain);
        }
    }

    public string Path { get; }
    public Dictionary<string, string> Labels { get; } = new(StringComparer.Ordinal);
    public Dictionary<string, string> Globals { get; } = new(StringComparer.Ordinal);
    public List<QubesdDomain> Domains { get; } = [];

    public QubesdDomain? Find(string name) => Domains.FirstOrDefault(d => d.Name == name);

    // ------------------------------------------------------------------ computed values

    /// <summary>
    /// The netvm as an object: stored ("" is None), else the default: None for a TemplateVM
    /// (qubes/vm/templatevm.py l.60-68), app.default_netvm for the others (net.py l.151-160).
    /// </summary>
    public QubesdDomain? NetVm(QubesdDomain vm)
    {
        if (!vm.HasNetworking) return null;
        var name = vm.Properties.TryGetValue("netvm", out var stored) ? stored
            : vm.Class == "TemplateVM" ? "" : Globals.GetValueOrDefault("default_netvm") ?? "";
        return name.Length == 0 ? null : Find(name);
    }

    /// <summary>provides_network: stored, default False (net.py l.162-169).</summary>
    public bool ProvidesNetwork(QubesdDomain vm) => vm.HasNetworking && vm.Properties.TryGetValue("provides_network", out var v) && ParseBool(v) == true;

    /// <summary>is_networked (net.py l.493-504): provides network, or has a netvm.</summary>
    public bool IsNetworked(QubesdDomain vm) => ProvidesNetwork(vm) || NetVm(vm) is not null;

    /// <summary>connected_vms (net.py l.263-270): every qube whose netvm is this one.</summary>
    public IEnumerable<QubesdDomain> ConnectedVms(QubesdDomain netvm) => Domains.Where(d => NetVm(d) == netvm);

    /// <summary>
    /// The default ip (net.py _default_ip, l.50, and get_ip_for_vm, l.216): none when not networked;
    /// vmid_to_ipv4 (l.110-126) of 10.137 and the qid, or of 10.138 and the dispid for a DispVM.
    /// </summary>
    public string? DefaultIp(QubesdDomain vm)
    {
        if (!IsNetworked(vm)) return null;
        var (prefix, id) = vm.IsDispVm ? ("10.138", vm.DispId ?? 0) : ("10.137", vm.Qid);
        if (id < 255) return $"{prefix}.{(id >> 8) & 0xFF}.{id & 0xFF}";
        id -= 1;
        return $"{prefix}.{id / 254}.{id % 254 + 1}";
    }

    /// <summary>
    /// The default ip6 (net.py _default_ip6, l.59, and get_ip6_for_vm, l.228): none when not networked or when
    /// <c>features.check_with_netvm("ipv6", False)</c> is false; the prefix fd09:24ef:4179:0000 (qubes/config.py
    /// l.107) with "::a89:" and the qid in hex, or "::a8a:" and the dispid for a DispVM, as str(IPv6Address) writes it.
    /// </summary>
    public string? DefaultIp6(QubesdDomain vm)
    {
        if (!IsNetworked(vm) || !CheckWithNetVm(vm, "ipv6")) return null;
        return vm.IsDispVm ? $"fd09:24ef:4179::a8a:{vm.DispId ?? 0:x}" : $"fd09:24ef:4179::a89:{vm.Qid:x}";
    }

    /// <summary>
    /// features.check_with_netvm (qubes/features.py _recursive_check): the first qube along the netvm chain
    /// that has the feature gives its value; true when that value is not empty.
    /// </summary>
    public bool CheckWithNetVm(QubesdDomain vm, string feature)
    {
        var seen = new HashSet<QubesdDomain>();
        for (var d = vm; d is not null && seen.Add(d); d = NetVm(d))
            if (d.Features.TryGetValue(feature, out var value)) return value.Length > 0;
        return false;
    }

    public string? Ip(QubesdDomain vm) => vm.Properties.GetValueOrDefault("ip") ?? DefaultIp(vm);

    public string? Ip6(QubesdDomain vm) => vm.Properties.GetValueOrDefault("ip6") ?? DefaultIp6(vm);

    // ------------------------------------------------------------------ properties as the Admin API shows them

    /// <summary>
    /// The property's type word in admin.vm.property.Get/GetAll (_serialize_property, admin.py l.214-236):
    /// "vm" for a VMProperty, "int" and "bool" by type, "label" for label, "str" for everything else
    /// (ip and ip6 are IPv4Address/IPv6Address there, so "str"). Types from the definitions in
    /// qubes/vm/__init__.py (qid int), qubes/vm/qubesvm.py (l.737-960), net.py (l.128-169),
    /// qubes/vm/mix/dvmtemplate.py (template_for_dispvms bool) and qubes/vm/dispvm.py (dispid int, auto_cleanup bool).
    /// </summary>
    public static string TypeOf(string name) => name switch
    {
        "netvm" or "template" or "default_dispvm" or "management_dispvm" or "guivm" or "audiovm" or "default_netvm" or "updatevm" or "clockvm" => "vm",
        "provides_network" or "template_for_dispvms" or "autostart" or "debug" or "include_in_backups" or "installed_by_rpm" or "updateable" or "auto_cleanup" => "bool",
        "qid" or "dispid" or "memory" or "maxmem" or "stubdom_mem" or "vcpus" or "qrexec_timeout" or "shutdown_timeout" or "backup_timestamp" => "int",
        "label" => "label",
        _ => "str",
    };

    /// <summary>
    /// The properties GetAll reports here (admin.py _property_get_all, l.262): every stored one (default=False)
    /// and the computed defaults the module reads (default=True): name and qid of dom0; netvm, provides_network,
    /// ip, ip6 of a qube with networking; template_for_dispvms where DVMTemplateMixin is; default_dispvm (a
    /// DispVM's defaults to its template, qubes/vm/dispvm.py l.279; the others' to app.default_dispvm,
    /// qubesvm.py l.921, adminvm.py l.87). qubesd reports every property of the class; these are the ones the
    /// module reads. Sorted as property.__lt__ sorts (load stage, then name; qubes/__init__.py l.387).
    /// </summary>
    public List<(string Name, bool IsDefault, string Value)> PropertiesOf(QubesdDomain vm)
    {
        var list = vm.Properties.Select(p => (p.Key, false, p.Value)).ToList();
        void Default(string name, string? value)
        {
            if (!vm.Properties.ContainsKey(name)) list.Add((name, true, value ?? ""));
        }
        if (vm.IsAdminVm)
        {
            Default("name", "dom0");
            Default("qid", "0");
        }
        if (vm.HasNetworking)
        {
            Default("netvm", NetVm(vm)?.Name);
            Default("provides_network", "False");
            Default("ip", DefaultIp(vm));
            Default("ip6", DefaultIp6(vm));
            if (vm.CanBeDispVmTemplate) Default("template_for_dispvms", "False");
        }
        if (vm.Class != "RemoteVM")
            Default("default_dispvm", vm.IsDispVm ? vm.Properties.GetValueOrDefault("template") : Globals.GetValueOrDefault("default_dispvm"));
        return list.OrderBy(p => LoadStage(p.Item1)).ThenBy(p => p.Item1, StringComparer.Ordinal).ToList();
    }

    /// <summary>VMProperty properties are loaded in stage 4 (their definitions say load_stage=4), the others in stage 2 (property's default).</summary>
    public static int LoadStage(string name) => TypeOf(name) == "vm" || name is "kernelopts" or "bootmode" or "appvm_default_bootmode" ? 4 : 2;

    // ------------------------------------------------------------------ setting properties

    /// <summary>property.bool (qubes/__init__.py l.484-500): 0/no/false/off and 1/yes/true/on, any case.</summary>
    public static bool? ParseBool(string value) => value.ToLowerInvariant() switch
    {
        "0" or "no" or "false" or "off" => false,
        "1" or "yes" or "true" or "on" => true,
        _ => null,
    };

    /// <summary>
    /// The value to store for admin.vm.property.Set (admin.py _property_set, l.356-366): the property must be
    /// one of the class's (QubesNoSuchPropertyError), then <c>sanitize</c> (qubes/__init__.py l.409-451;
    /// VMProperty's, qubes/vm/__init__.py l.746-756), then the setter and the value's type. Returns the string
    /// qubes.xml stores.
    /// </summary>
    public string Sanitize(QubesdDomain vm, string name, byte[] payload)
    {
        if (payload.Any(b => b > 0x7F)) throw new QubesdError("QubesValueError", "Non-ASCII bytes in property value");
        var value = System.Text.Encoding.ASCII.GetString(payload);
        switch (TypeOf(name))
        {
            case "vm":
                // VMProperty.sanitize: "" is None; anything else must be a valid name (validate_name, l.44-95)
                if (value.Length == 0) return "";
                ValidateName(value);
                // VMProperty.__set__ (l.708-744): the qube must exist
                var target = Find(value) ?? throw new QubesdError("QubesPropertyValueError", $"Can't set {name} to non-existing qube {value}");
                if (name == "netvm") SetterNetVm(vm, target);
                return target.Name;
            case "bool":
                var b = ParseBool(value) ?? throw new QubesdError("QubesValueError", $"Invalid literal for boolean property: '{value}'");
                // _setter_provides_network (net.py l.89-99): False while qubes still use it is refused
                if (name == "provides_network" && !b && ConnectedVms(vm).Any())
                    throw new QubesdError("QubesValueError", "The qube is still used by other qubes, change theirs 'netvm' first");
                return b ? "True" : "False";
            case "int":
                if (!PythonText.TryInt(value, out BigInteger i)) throw new QubesdError("QubesValueError", "Failed to parse property value as int");
                return i.ToString(CultureInfo.InvariantCulture);
            case "label":
                // setter_label (qubes/vm/__init__.py l.98-105) through app.get_label: an existing label's name
                if (!Labels.ContainsKey(value)) throw new QubesdError("QubesLabelNotFoundError", $"Label does not exist: {value}");
                return value;
        }
        if (name == "ip")
            return IPv4Address(value) ?? throw new QubesdError("QubesValueError", "Failed to parse property value as IPv4Address");
        // str: every character in string.printable
        if (value.Any(c => c is not ((>= ' ' and <= '~') or '\t' or '\n' or '\r' or '\v' or '\f')))
            throw new QubesdError("QubesValueError", "Invalid characters in property value");
        return value;
    }

    // ipaddress.IPv4Address(str): four decimal octets 0-255, no leading zeros (Python 3.9.5 and later).
    private static string? IPv4Address(string s) => PythonText.IsInetPton4(s) ? s : null;

    private static void ValidateName(string value)
    {
        if (value.Length > 31) throw new QubesdError("QubesValueError", "VM name must be shorter than 32 characters");
        if (value[0] is (>= '0' and <= '9') or '_' or '.' or '-') throw new QubesdError("QubesValueError", "VM name cannot start with hyphen, underscore, dot or numbers");
        if (!char.IsAsciiLetter(value[0]) || !value.All(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '.' or '-'))
            throw new QubesdError("QubesValueError", "VM name contains illegal characters");
        if (value == "Domain-0") throw new QubesdError("QubesValueError", "VM name cannot be 'Domain-0'");
        if (value is "none" or "default") throw new QubesdError("QubesValueError", "VM name cannot be 'none' nor 'default'");
        if (value.EndsWith("-dm", StringComparison.Ordinal)) throw new QubesdError("QubesValueError", "VM name cannot end with -dm");
    }

    /// <summary>_setter_netvm (net.py l.70-86): the new netvm must provide network and must not close a loop.</summary>
    private void SetterNetVm(QubesdDomain vm, QubesdDomain target)
    {
        if (!ProvidesNetwork(target)) throw new QubesdError("QubesValueError", $"The {target.Name} qube does not provide network");
        var seen = new HashSet<QubesdDomain>();
        for (var d = target; d is not null && seen.Add(d); d = NetVm(d))
            if (d == vm) throw new QubesdError("QubesValueError", "Loops in network are unsupported");
    }

    /// <summary>Names a property of the qube's class; an unknown one is QubesNoSuchPropertyError (admin.py l.357).</summary>
    public static void RequireKnown(QubesdDomain vm, string name)
    {
        var known = vm.HasNetworking ? NetworkingProperties : vm.IsAdminVm ? AdminVmProperties : RemoteVmProperties;
        if (!known.Contains(name) && !(vm.IsDispVm && name is "dispid" or "auto_cleanup") && !(vm.CanBeDispVmTemplate && name == "template_for_dispvms")
            && !(name == "template" && vm.Class is "AppVM" or "DispVM"))
            throw new QubesdError("QubesNoSuchPropertyError", $"Invalid property '{name}' of {vm.Name}");
    }

    // qubes/vm/__init__.py BaseVM/LocalVM, qubesvm.py l.337-960 and net.py l.128-169 (the stored kinds, stateless ones left out).
    private static readonly HashSet<string> NetworkingProperties = new(StringComparer.Ordinal)
    {
        "name", "qid", "uuid", "label", "netvm", "provides_network", "ip", "ip6", "mac", "default_dispvm", "management_dispvm",
        "guivm", "audiovm", "virt_mode", "installed_by_rpm", "memory", "maxmem", "stubdom_mem", "vcpus", "kernel", "kernelopts",
        "debug", "default_user", "qrexec_timeout", "shutdown_timeout", "autostart", "include_in_backups", "backup_timestamp",
        "updateable", "keyboard_layout", "bootmode", "icon",
    };

    private static readonly HashSet<string> AdminVmProperties = new(StringComparer.Ordinal)
        { "name", "qid", "uuid", "label", "default_dispvm", "include_in_backups", "updateable", "keyboard_layout", "icon" };

    private static readonly HashSet<string> RemoteVmProperties = new(StringComparer.Ordinal) { "name", "uuid", "label", "relayvm", "transport_rpc" };

    // ------------------------------------------------------------------ writing qubes.xml

    /// <summary>Stores a property's value (or removes it for a reset) in the domain's &lt;properties&gt;, in property_list order.</summary>
    public void StoreProperty(QubesdDomain vm, string name, string? value)
    {
        if (value is null) vm.Properties.Remove(name);
        else vm.Properties[name] = value;
        StoreElement(Container(vm, "properties"), "property", name, value,
            p => (LoadStage((string)p.Attribute("name")!), (string)p.Attribute("name")!).CompareTo((LoadStage(name), name)) > 0);
    }

    /// <summary>A feature set (kept in place when it exists, added last when new: a dict) or removed (null).</summary>
    public void StoreFeature(QubesdDomain vm, string name, string? value)
    {
        if (value is null) vm.Features.Remove(name);
        else vm.Features[name] = value;
        StoreElement(Container(vm, "features"), "feature", name, value, goesBefore: null);
    }

    // The domain's <properties> (first) or <features> (after <properties>), made when missing.
    private static XElement Container(QubesdDomain vm, string name)
    {
        if (vm.Element.Element(name) is { } found) return found;
        var made = new XElement(name);
        if (name != "properties" && vm.Element.Element("properties") is { } props) props.AddAfterSelf(made); else vm.Element.AddFirst(made);
        return made;
    }

    // One <item name=".."> of a container: value changed in place, added before the first element goesBefore
    // picks (or last), or removed (null).
    private static void StoreElement(XElement container, string item, string name, string? value, Func<XElement, bool>? goesBefore)
    {
        var existing = container.Elements(item).FirstOrDefault(e => (string?)e.Attribute("name") == name);
        if (value is null)
        {
            existing?.Remove();
            Collapse(container);
            return;
        }
        if (existing is not null)
        {
            existing.Attribute("ref")?.Remove();
            existing.Value = value;
            return;
        }
        var element = new XElement(item, new XAttribute("name", name), value);
        var before = goesBefore is null ? null : container.Elements(item).FirstOrDefault(goesBefore);
        if (before is not null) before.AddBeforeSelf(element); else container.Add(element);
    }

    // An element left without children is written <x/>, as lxml writes an element built without any.
    private static void Collapse(XElement container)
    {
        if (!container.HasElements) container.ReplaceWith(new XElement(container.Name, container.Attributes()));
    }

    /// <summary>Qubes.save: the whole file, mode 0660.</summary>
    public void Save() =>
        LxmlFile.Replace(Path, LxmlFile.Render(_doc.Root!), UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.GroupWrite);
}
