using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;
using System.Xml;
using System.Xml.Linq;
using QubesFirewall.Engine.Io;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Validation;

namespace QubesFirewall.Engine.Formats;

/// <summary>
/// dom0's qubes.xml (/var/lib/qubes/qubes.xml), as core-admin stores it: <c>&lt;qubes&gt;</c> with
/// <c>&lt;labels&gt;</c>, <c>&lt;pools&gt;</c>, global <c>&lt;properties&gt;</c> and
/// <c>&lt;domains&gt;</c>; each <c>&lt;domain id="domain-QID" class="..."&gt;</c> holds
/// <c>&lt;properties&gt;</c> (<c>&lt;property name="netvm"&gt;sys-firewall&lt;/property&gt;</c>; only
/// properties set explicitly; a reference to another qube is stored as its name, the empty value
/// meaning "none"; older files may hold <c>ref="..."</c> instead of text, which qubesd still reads),
/// <c>&lt;features&gt;</c>, <c>&lt;tags&gt;</c>, <c>&lt;devices class="..."&gt;</c> and
/// <c>&lt;volume-config&gt;</c>.
/// <para>
/// Reading is lenient (what qubesd would reject is kept as written where possible); the effective
/// netvm, IP and IPv6 address are computed the way qubesd computes them. Writing changes one feature
/// or property under the qubes.xml lock, through an atomic replace, and leaves everything else as
/// it was, serialized the way qubesd serializes (lxml pretty print: two-space indent, <c>&lt;x/&gt;</c>
/// for empty elements, no XML declaration unless the file had one).
/// </para>
/// </summary>
public static partial class QubesXml
{
    /// <summary>qubesd's site-local IPv6 prefix (core-admin <c>qubes.config.qubes_ipv6_prefix</c>).</summary>
    public const string IPv6Prefix = "fd09:24ef:4179:0000";

    public const string AppVmsDirectory = "appvms";
    public const string TemplatesDirectory = "vm-templates";

    // ---------------------------------------------------------------- reading

    /// <summary>Reads a qubes.xml file.</summary>
    public static QubesInventory Load(string path)
    {
        var (doc, _) = ReadDocument(path);
        return BuildInventory(doc, path);
    }

    /// <summary>Reads qubes.xml content; <paramref name="sourcePath"/> only names it in messages.</summary>
    public static QubesInventory Parse(string xml, string? sourcePath = null)
    {
        var doc = ParseDocument(xml, sourcePath);
        return BuildInventory(doc, sourcePath);
    }

    private static (XDocument Doc, string Text) ReadDocument(string path)
    {
        string text;
        try
        {
            text = File.ReadAllText(path, Encoding.UTF8);
        }
        catch (FileNotFoundException e)
        {
            throw new QubesFirewallException(ErrorIds.InvalidQubesXml, FailureKind.ObjectNotFound, $"Cannot read {path}: the file does not exist.", path, e);
        }
        catch (DirectoryNotFoundException e)
        {
            throw new QubesFirewallException(ErrorIds.InvalidQubesXml, FailureKind.ObjectNotFound, $"Cannot read {path}: the directory does not exist.", path, e);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new QubesFirewallException(ErrorIds.InvalidQubesXml, FailureKind.ResourceUnavailable, $"Cannot read {path}: {e.Message}", path, e);
        }
        return (ParseDocument(text, path), text);
    }

    private static XDocument ParseDocument(string text, string? sourcePath)
    {
        var where = sourcePath ?? "qubes.xml";
        XDocument doc;
        try
        {
            var settings = new XmlReaderSettings { DtdProcessing = DtdProcessing.Prohibit, XmlResolver = null, IgnoreWhitespace = false };
            using var reader = XmlReader.Create(new StringReader(text), settings);
            doc = XDocument.Load(reader, LoadOptions.PreserveWhitespace | LoadOptions.SetLineInfo);
        }
        catch (XmlException e)
        {
            throw new QubesFirewallException(ErrorIds.InvalidQubesXml, FailureKind.InvalidData,
                $"{where} is not well-formed XML (line {e.LineNumber}, position {e.LinePosition}): {e.Message}", sourcePath, e);
        }
        if (doc.Root is null || doc.Root.Name != "qubes")
            throw new QubesFirewallException(ErrorIds.InvalidQubesXml, FailureKind.InvalidData,
                $"{where} is not a qubes.xml: its root element is <{doc.Root?.Name.LocalName}> (line {LineOf(doc.Root)}), not <qubes>.", sourcePath);
        return doc;
    }

    private sealed class RawDomain
    {
        public required XElement Element { get; init; }
        public required string Name { get; init; }
        public required int Qid { get; init; }
        public required QubeClass Class { get; init; }
        public required string ClassName { get; init; }
        public required Dictionary<string, string> Properties { get; init; }
        public required Dictionary<string, string> Features { get; init; }
        public required List<string> Tags { get; init; }
        public string? NetVM { get; set; }
        public NetVmSource NetVmSource { get; set; }
        public bool ProvidesNetwork { get; set; }
        public bool HasNetworking => Class is not (QubeClass.AdminVM or QubeClass.RemoteVM);
    }

    private static QubesInventory BuildInventory(XDocument doc, string? sourcePath)
    {
        var where = sourcePath ?? "qubes.xml";
        var root = doc.Root!;

        // Labels: qubesd stores <label id="label-N" color="0x...">name</label>; a qube's label
        // property holds the name (older files: "label-N" or the index).
        var labelColors = new Dictionary<string, string>(StringComparer.Ordinal);
        var labelByKey = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var label in root.Elements("labels").Elements("label"))
        {
            var name = label.Value;
            if (!LabelPattern().IsMatch(name))
                throw new QubesFirewallException(ErrorIds.InvalidQubesXml, FailureKind.InvalidData,
                    $"{where}: the label at line {LineOf(label)} is named '{Printable(name)}', which is not a label name (ASCII letters, digits, '_' and '-'). qubesd never stores such a value; fix the file before using this root.", sourcePath);
            labelColors[name] = (string?)label.Attribute("color") ?? "";
            labelByKey[name] = name;
            var id = (string?)label.Attribute("id");
            if (id is not null)
            {
                labelByKey[id] = name;
                var dash = id.IndexOf('-');
                if (dash >= 0) labelByKey[id[(dash + 1)..]] = name;
            }
        }

        var globals = ReadProperties(root.Element("properties"));

        var domains = new List<RawDomain>();
        var byName = new Dictionary<string, RawDomain>(StringComparer.Ordinal);
        var byQid = new Dictionary<int, RawDomain>();
        foreach (var el in root.Elements("domains").Elements("domain"))
        {
            var raw = ReadDomain(el, where);
            ValidateDomain(raw, where);
            if (byName.TryGetValue(raw.Name, out var other))
                throw new QubesFirewallException(ErrorIds.InvalidQubesXml, FailureKind.InvalidData,
                    $"{where} lists the qube '{Printable(raw.Name)}' twice (lines {LineOf(other.Element)} and {LineOf(el)}).", sourcePath);
            if (byQid.TryGetValue(raw.Qid, out other))
                throw new QubesFirewallException(ErrorIds.InvalidQubesXml, FailureKind.InvalidData,
                    $"{where} gives qid {raw.Qid} to both '{Printable(other.Name)}' (line {LineOf(other.Element)}) and '{Printable(raw.Name)}' (line {LineOf(el)}).", sourcePath);
            byName[raw.Name] = raw;
            byQid[raw.Qid] = raw;
            domains.Add(raw);
        }

        var syntheticDom0 = !byQid.ContainsKey(0) && !byName.ContainsKey("dom0");

        // qubesd resolves a qube property (netvm, template) to a qube of the file when it loads it, and fails on
        // one that names no qube; a chain through a qube that does not exist would mean nothing here either.
        bool Exists(string name) => byName.ContainsKey(name) || (name == "dom0" && syntheticDom0);
        foreach (var d in domains)
            foreach (var reference in new[] { "netvm", "template" })
                if (d.Properties.TryGetValue(reference, out var v) && v.Length > 0 && !Exists(v))
                    throw new QubesFirewallException(ErrorIds.InvalidQubesXml, FailureKind.InvalidData,
                        $"{where}: the qube '{Printable(d.Name)}' (line {LineOf(d.Element)}) has {reference} '{Printable(v)}', which is no qube of the file. qubesd would not load it; fix the file (or restore it) before using this root.", d.Name);
        if (globals.TryGetValue("default_netvm", out var globalNetVm) && globalNetVm.Length > 0 && !Exists(globalNetVm))
            throw new QubesFirewallException(ErrorIds.InvalidQubesXml, FailureKind.InvalidData,
                $"{where}: default_netvm is '{Printable(globalNetVm)}', which is no qube of the file. qubesd would not load it; fix the file (or restore it) before using this root.", sourcePath);

        // Effective netvm, as qubesd's NetVMMixin.netvm: the property when set ("" = none), else the
        // class default: default_netvm for AppVM/StandaloneVM/DispVM (provides_network or not), none
        // for TemplateVM. AdminVM and RemoteVM have no netvm.
        var defaultNetVm = globals.TryGetValue("default_netvm", out var dn) && dn.Length > 0 ? dn : null;
        foreach (var d in domains)
        {
            if (!d.HasNetworking) { d.NetVmSource = NetVmSource.None; continue; }
            d.ProvidesNetwork = ParseBool(d.Properties.GetValueOrDefault("provides_network")) ?? false;
            if (d.Properties.TryGetValue("netvm", out var netvm))
            {
                d.NetVM = netvm.Length == 0 ? null : netvm;
                d.NetVmSource = netvm.Length == 0 ? NetVmSource.None : NetVmSource.Explicit;
            }
            else
            {
                d.NetVM = d.Class == QubeClass.TemplateVM ? null : defaultNetVm;
                d.NetVmSource = NetVmSource.Default;
            }
        }

        // qubesd breaks netvm loops when it loads qubes.xml (a qube connected to itself, or to a qube
        // downstream of it, is disconnected); do the same so that every chain ends.
        foreach (var d in domains)
        {
            if (d.NetVM is null) continue;
            var seen = new HashSet<string>(StringComparer.Ordinal);
            var next = d.NetVM;
            while (next is not null && seen.Add(next))
            {
                if (next == d.Name)
                {
                    d.NetVM = null;
                    d.NetVmSource = NetVmSource.None;
                    break;
                }
                next = byName.TryGetValue(next, out var up) ? up.NetVM : null;
            }
        }

        var defaultDispVm = globals.TryGetValue("default_dispvm", out var dd) && dd.Length > 0 ? dd : null;
        var qubes = new List<Qube>(domains.Count + 1);
        if (syntheticDom0)
            qubes.Add(new Qube { Name = "dom0", Qid = 0, Class = QubeClass.AdminVM, ClassName = nameof(QubeClass.AdminVM), NetVmSource = NetVmSource.None, DefaultDispVM = defaultDispVm });

        foreach (var d in domains)
        {
            var props = d.Properties;
            var dispId = ParseInt(props.GetValueOrDefault("dispid"));
            var networked = d.HasNetworking && (d.ProvidesNetwork || d.NetVM is not null);

            string? ip = null, ip6 = null;
            if (d.HasNetworking)
            {
                if (props.TryGetValue("ip", out var explicitIp) && explicitIp.Length > 0)
                    ip = TryCanonicalIPv4(explicitIp) ?? explicitIp;
                else if (networked)
                    ip = d.Class == QubeClass.DispVM
                        ? (dispId is { } id ? IPv4For(id, disposable: true) : null)
                        : IPv4For(d.Qid, disposable: false);

                if (props.TryGetValue("ip6", out var explicitIp6) && explicitIp6.Length > 0)
                    ip6 = TryCanonicalIPv6(explicitIp6) ?? explicitIp6;
                else if (networked && IPv6Enabled(d, byName))
                    ip6 = d.Class == QubeClass.DispVM
                        ? (dispId is { } id ? IPv6For(id, disposable: true) : null)
                        : IPv6For(d.Qid, disposable: false);
            }

            string? label = null;
            if (props.TryGetValue("label", out var rawLabel) && rawLabel.Length > 0)
                label = labelByKey.TryGetValue(rawLabel, out var ln) ? ln : rawLabel;

            var hasTemplate = d.Class is QubeClass.AppVM or QubeClass.DispVM;
            var template = hasTemplate && props.TryGetValue("template", out var t) && t.Length > 0 ? t : null;

            string? effectiveDefaultDispVm;
            if (d.Class == QubeClass.RemoteVM) effectiveDefaultDispVm = null;
            else if (props.TryGetValue("default_dispvm", out var ddv)) effectiveDefaultDispVm = ddv.Length > 0 ? ddv : null;
            else if (d.Class == QubeClass.DispVM) effectiveDefaultDispVm = template;
            else effectiveDefaultDispVm = defaultDispVm;

            qubes.Add(new Qube
            {
                Name = d.Name,
                Qid = d.Qid,
                Class = d.Class,
                ClassName = d.ClassName,
                State = PowerState.Unknown,
                NetVM = d.NetVM,
                NetVmSource = d.NetVmSource,
                IP = ip,
                IPv6 = ip6,
                ProvidesNetwork = d.ProvidesNetwork,
                Template = template,
                Label = label,
                Uuid = props.TryGetValue("uuid", out var uuid) && uuid.Length > 0 ? uuid.ToLowerInvariant() : null,
                DispId = dispId,
                TemplateForDispVMs = ParseBool(props.GetValueOrDefault("template_for_dispvms")) ?? false,
                DefaultDispVM = effectiveDefaultDispVm,
                Features = d.Features,
                Properties = props,
                Tags = d.Tags,
                RelativeDirectory = d.Class switch
                {
                    QubeClass.AdminVM or QubeClass.RemoteVM => null,
                    QubeClass.TemplateVM => TemplatesDirectory + "/" + d.Name,
                    _ => AppVmsDirectory + "/" + d.Name,
                },
            });
        }

        return new QubesInventory(qubes, globals, labelColors, sourcePath);
    }

    private static RawDomain ReadDomain(XElement el, string where)
    {
        var className = (string?)el.Attribute("class") ?? "";
        var cls = className switch
        {
            "AdminVM" => QubeClass.AdminVM,
            "AppVM" => QubeClass.AppVM,
            "TemplateVM" => QubeClass.TemplateVM,
            "StandaloneVM" => QubeClass.StandaloneVM,
            "DispVM" => QubeClass.DispVM,
            "RemoteVM" => QubeClass.RemoteVM,
            _ => QubeClass.AppVM,
        };
        var props = ReadProperties(el.Element("properties"));

        // AdminVM's name and qid are fixed defaults that qubesd does not store.
        var name = props.GetValueOrDefault("name");
        if (string.IsNullOrEmpty(name))
        {
            if (cls == QubeClass.AdminVM) name = "dom0";
            else throw new QubesFirewallException(ErrorIds.InvalidQubesXml, FailureKind.InvalidData,
                $"{where}: the {ClassLabel(className)} domain at line {LineOf(el)} has no name property.");
        }

        int qid;
        if (ParseInt(props.GetValueOrDefault("qid")) is { } q) qid = q;
        else if (cls == QubeClass.AdminVM) qid = 0;
        else if (((string?)el.Attribute("id"))?.StartsWith("domain-", StringComparison.Ordinal) == true
                 && ParseInt(((string)el.Attribute("id")!)["domain-".Length..]) is { } fromId) qid = fromId;
        else throw new QubesFirewallException(ErrorIds.InvalidQubesXml, FailureKind.InvalidData,
            $"{where}: the qube '{Printable(name)}' (line {LineOf(el)}) has no valid qid property.", name);

        var features = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var f in el.Elements("features").Elements("feature"))
        {
            var fname = (string?)f.Attribute("name");
            if (fname is null) continue;
            features[fname] = f.Value;
        }
        // qubesd keeps tags in a set (core-admin qubes/vm/__init__.py class Tags) and lists them sorted (admin.vm.tag.List, qubes/api/admin.py l.780)
        var tags = el.Elements("tags").Elements("tag").Select(t => (string?)t.Attribute("name")).OfType<string>().Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).ToList();

        return new RawDomain
        {
            Element = el,
            Name = name,
            Qid = qid,
            Class = cls,
            ClassName = className,
            Properties = props,
            Features = features,
            Tags = tags,
        };
    }

    /// <summary>
    /// An offline root is just files: every value that reaches a script, a file or a message is checked here, where
    /// it enters, as qubesd's property types would check it (core-admin <c>qubes/vm/__init__.py</c> validate_name and
    /// the uuid property, <c>qubes/vm/mix/net.py</c> lines 136-145: ip and ip6 are IPv4Address and IPv6Address).
    /// A value qubesd could never have stored is refused, naming the qube, the property and the line.
    /// </summary>
    private static void ValidateDomain(RawDomain d, string where)
    {
        QubesFirewallException Bad(string property, string value, string what) => new(ErrorIds.InvalidQubesXml, FailureKind.InvalidData,
            $"{where}: the qube '{Printable(d.Name)}' (line {LineOf(d.Element)}) has {property} '{Printable(value)}', which {what}. qubesd never stores such a value; fix the file (or restore it) before using this root.", d.Name);
        if (d.Class != QubeClass.AdminVM && QubeName.Problem(d.Name) is { } nameProblem)
            throw new QubesFirewallException(ErrorIds.InvalidQubesXml, FailureKind.InvalidData,
                $"{where}: the domain at line {LineOf(d.Element)} has an invalid name: {nameProblem}", d.Name);
        foreach (var reference in new[] { "netvm", "template", "default_dispvm", "management_dispvm", "audiovm", "guivm" })
            if (d.Properties.TryGetValue(reference, out var v) && v.Length > 0 && !QubeName.IsValid(v) && v != "dom0")
                throw Bad(reference, v, "is not a qube name");
        if (d.Properties.TryGetValue("ip", out var ip) && ip.Length > 0 && TryCanonicalIPv4(ip) is null)
            throw Bad("ip", ip, "is not an IPv4 address (qubesd's ip property is an ipaddress.IPv4Address: four decimal numbers 0-255 and nothing else)");
        if (d.Properties.TryGetValue("ip6", out var ip6) && ip6.Length > 0 && TryCanonicalIPv6(ip6) is null)
            throw Bad("ip6", ip6, "is not an IPv6 address (qubesd's ip6 property is an ipaddress.IPv6Address)");
        foreach (var address in new[] { "gateway", "gateway6", "visible_ip", "visible_ip6", "visible_gateway", "visible_gateway6", "dns" })
            if (d.Properties.TryGetValue(address, out var v) && v.Length > 0 && TryCanonicalIPv4(v) is null && TryCanonicalIPv6(v) is null && !v.Split(' ').All(a => TryCanonicalIPv4(a) is not null))
                throw Bad(address, v, "is not an IP address");
        if (d.Properties.TryGetValue("uuid", out var uuid) && uuid.Length > 0 && !Guid.TryParseExact(uuid, "D", out _))
            throw Bad("uuid", uuid, "is not a UUID (8-4-4-4-12 hexadecimal digits)");
        if (d.Properties.TryGetValue("label", out var label) && label.Length > 0 && !LabelPattern().IsMatch(label))
            throw Bad("label", label, "is not a label name (ASCII letters, digits, '_' and '-')");
        if (d.Properties.TryGetValue("dispid", out var dispid) && dispid.Length > 0 && ParseInt(dispid) is null)
            throw Bad("dispid", dispid, "is not a number");
    }

    [GeneratedRegex(@"\A[A-Za-z0-9_-]{1,64}\z", RegexOptions.CultureInvariant)]
    private static partial Regex LabelPattern();

    private static string ClassLabel(string className) => className.Length == 0 ? "class-less" : Printable(className);

    /// <summary>Properties of a <c>&lt;properties&gt;</c> element as qubesd loads them: <c>ref</c> wins over the text; no text = empty value.</summary>
    private static Dictionary<string, string> ReadProperties(XElement? properties)
    {
        var map = new Dictionary<string, string>(StringComparer.Ordinal);
        if (properties is null) return map;
        foreach (var p in properties.Elements("property"))
        {
            var name = (string?)p.Attribute("name");
            if (name is null) continue;
            var reference = (string?)p.Attribute("ref");
            map[name] = !string.IsNullOrEmpty(reference) ? reference : p.Value;
        }
        return map;
    }

    /// <summary>
    /// qubesd's <c>features.check_with_netvm("ipv6", False)</c>: the first qube along the netvm chain
    /// (the qube itself first) that has the feature decides; any non-empty value enables, the empty
    /// value disables.
    /// </summary>
    private static bool IPv6Enabled(RawDomain start, Dictionary<string, RawDomain> byName)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        for (var d = start; d is not null && seen.Add(d.Name);)
        {
            if (d.Features.TryGetValue("ipv6", out var v)) return v.Length > 0;
            d = d.NetVM is { } n && byName.TryGetValue(n, out var up) ? up : null;
        }
        return false;
    }

    // ---------------------------------------------------------------- addresses

    /// <summary>
    /// qubesd's <c>vmid_to_ipv4</c>: <c>10.137.</c> from a qid, <c>10.138.</c> from a disposable's
    /// dispid. Ids below 255 keep the historic <c>x.y.0.id</c>; from 255 on the id minus one is
    /// split in 254 hosts per /24 (hosts 1..254, never .0 or .255): 255 → x.y.1.1.
    /// Null when the id does not fit an address.
    /// </summary>
    public static string? IPv4For(int id, bool disposable)
    {
        var prefix = disposable ? "10.138" : "10.137";
        if (id < 255)
        {
            if (id < 0) return null;
            return string.Create(CultureInfo.InvariantCulture, $"{prefix}.{(id >> 8) & 0xFF}.{id & 0xFF}");
        }
        var n = id - 1;
        var third = n / 254;
        if (third > 255) return null;
        return string.Create(CultureInfo.InvariantCulture, $"{prefix}.{third}.{n % 254 + 1}");
    }

    /// <summary>qubesd's <c>get_ip6_for_vm</c>: <c>fd09:24ef:4179::a89:&lt;qid hex&gt;</c>, disposables <c>::a8a:&lt;dispid hex&gt;</c>.</summary>
    public static string? IPv6For(int id, bool disposable)
    {
        if (id is < 0 or > 0xFFFF) return null;
        var text = string.Create(CultureInfo.InvariantCulture, $"{IPv6Prefix}::{(disposable ? "a8a" : "a89")}:{id:x}");
        return IPAddress.Parse(text).ToString();
    }

    private static string? TryCanonicalIPv4(string s) =>
        StrictIPv4().IsMatch(s) ? IPAddress.Parse(s).ToString() : null;

    private static string? TryCanonicalIPv6(string s) =>
        !s.Contains('%') && IPAddress.TryParse(s, out var a) && a.AddressFamily == AddressFamily.InterNetworkV6 ? a.ToString() : null;

    [GeneratedRegex(@"\A(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}\z", RegexOptions.CultureInvariant)]
    private static partial Regex StrictIPv4();

    // ---------------------------------------------------------------- writing: features

    [GeneratedRegex(@"\A[a-zA-Z0-9_.-]+\z", RegexOptions.CultureInvariant)]
    private static partial Regex FeatureNamePattern();

    /// <summary>Feature names as qubesd's admin.vm.feature.Set accepts them: <c>[a-zA-Z0-9_.-]+</c>.</summary>
    public static bool IsValidFeatureName(string? name) => name is not null && FeatureNamePattern().IsMatch(name);

    /// <summary>Feature values as qubesd accepts them: printable ASCII, 0x20 to 0x7E (the empty value included).</summary>
    public static bool IsValidFeatureValue(string? value) => value is not null && FirstNonPrintable(value) < 0;

    public static void ValidateFeatureName(string? name)
    {
        if (name is null || !FeatureNamePattern().IsMatch(name))
            throw QubesFirewallException.Invalid(ErrorIds.InvalidFeatureName,
                $"'{Printable(name)}' is not a valid feature name: qubesd accepts only ASCII letters, digits, '_', '.' and '-' (at least one character).", name);
    }

    public static void ValidateFeatureValue(string name, string? value)
    {
        if (value is null)
            throw QubesFirewallException.Invalid(ErrorIds.InvalidFeatureValue, $"The value of feature '{Printable(name)}' is missing (use the empty string for an empty value).", name);
        var bad = FirstNonPrintable(value);
        if (bad >= 0)
            throw QubesFirewallException.Invalid(ErrorIds.InvalidFeatureValue,
                $"The value of feature '{Printable(name)}' contains {Describe(value[bad])} at position {bad}: qubesd accepts only printable ASCII (space to '~'), without newlines, tabs or non-ASCII letters.", value);
    }

    /// <summary>Sets a qube's feature in qubes.xml (added last when new, as qubesd does). Returns whether the file changed.</summary>
    public static bool SetFeature(string qubesXmlPath, string qube, string name, string value) =>
        SetFeatures(qubesXmlPath, qube, [new KeyValuePair<string, string?>(name, value)]);

    /// <summary>Removes a qube's feature from qubes.xml. Returns whether it was there.</summary>
    public static bool RemoveFeature(string qubesXmlPath, string qube, string name) =>
        SetFeatures(qubesXmlPath, qube, [new KeyValuePair<string, string?>(name, null)]);

    /// <summary>
    /// Sets (non-null value) and removes (null value) several features of one qube in one locked
    /// read-modify-write; every name and value is checked before anything is written. Returns whether the file changed.
    /// </summary>
    public static bool SetFeatures(string qubesXmlPath, string qube, IEnumerable<KeyValuePair<string, string?>> changes)
    {
        var list = changes.ToList();
        foreach (var (name, value) in list)
        {
            ValidateFeatureName(name);
            if (value is not null) ValidateFeatureValue(name, value);
        }
        return Modify(qubesXmlPath, qube, (domain, _, _) =>
        {
            var changed = false;
            foreach (var (name, value) in list)
                changed |= value is null ? RemoveFeatureElement(domain, name) : SetFeatureElement(domain, name, value);
            return changed;
        });
    }

    private static bool SetFeatureElement(XElement domain, string name, string value)
    {
        var features = domain.Element("features");
        if (features is null)
        {
            features = new XElement("features");
            var after = domain.Element("properties");
            if (after is not null) after.AddAfterSelf(features); else domain.AddFirst(features);
        }
        var existing = features.Elements("feature").Where(f => (string?)f.Attribute("name") == name).ToList();
        if (existing.Count == 1 && existing[0].Value == value) return false;
        if (existing.Count == 0)
        {
            features.Add(new XElement("feature", new XAttribute("name", name)) { Value = value });
            return true;
        }
        // qubesd keeps one value per name (the last one it read); rewrite the first, drop the others.
        existing[0].Value = value;
        foreach (var dup in existing.Skip(1)) RemoveElement(dup);
        return true;
    }

    private static bool RemoveFeatureElement(XElement domain, string name)
    {
        var existing = domain.Elements("features").Elements("feature").Where(f => (string?)f.Attribute("name") == name).ToList();
        foreach (var f in existing) RemoveElement(f);
        return existing.Count > 0;
    }

    // ---------------------------------------------------------------- writing: properties

    private static readonly HashSet<string> ReadOnlyProperties = new(StringComparer.Ordinal) { "name", "qid", "uuid", "dispid" };
    private static readonly HashSet<string> NoDefaultProperties = new(StringComparer.Ordinal) { "label", "template" };
    private static readonly HashSet<string> QubeReferenceProperties = new(StringComparer.Ordinal)
        { "netvm", "template", "default_dispvm", "management_dispvm", "guivm", "audiovm" };
    private static readonly HashSet<string> BoolProperties = new(StringComparer.Ordinal)
        { "provides_network", "template_for_dispvms", "autostart", "debug", "include_in_backups", "installed_by_rpm", "updateable", "auto_cleanup" };
    private static readonly HashSet<string> IntProperties = new(StringComparer.Ordinal)
        { "memory", "maxmem", "stubdom_mem", "vcpus", "qrexec_timeout", "shutdown_timeout", "backup_timestamp" };
    // Properties qubesd loads in stage 4 (after every qube exists); it stores properties sorted by (stage, name).
    private static readonly HashSet<string> Stage4Properties = new(StringComparer.Ordinal)
        { "netvm", "template", "default_dispvm", "management_dispvm", "guivm", "audiovm", "kernelopts", "bootmode", "appvm_default_bootmode" };

    [GeneratedRegex(@"\A[a-zA-Z_][a-zA-Z0-9_]*\z", RegexOptions.CultureInvariant)]
    private static partial Regex PropertyNamePattern();

    /// <summary>
    /// Sets a qube property in qubes.xml (e.g. <c>netvm</c>; the empty value means "none" for
    /// references). Values are checked as qubesd would (names of existing qubes, a netvm that
    /// provides network and closes no loop, booleans, integers, addresses) and stored in qubesd's
    /// form (booleans as True/False). Returns whether the file changed.
    /// </summary>
    public static bool SetProperty(string qubesXmlPath, string qube, string name, string value)
    {
        ValidatePropertyName(name);
        if (value is null)
            throw QubesFirewallException.Invalid(ErrorIds.InvalidPropertyValue, $"The value of property '{name}' is missing.", value);
        var bad = FirstNonPrintable(value);
        if (bad >= 0)
            throw QubesFirewallException.Invalid(ErrorIds.InvalidPropertyValue,
                $"The value of property '{name}' contains {Describe(value[bad])} at position {bad}: only printable ASCII is accepted.", value);
        return Modify(qubesXmlPath, qube, (domain, inventory, target) =>
        {
            var stored = NormalizePropertyValue(inventory, target, name, value);
            var properties = domain.Element("properties");
            if (properties is null)
            {
                properties = new XElement("properties");
                domain.AddFirst(properties);
            }
            var existing = properties.Elements("property").Where(p => (string?)p.Attribute("name") == name).ToList();
            if (existing.Count == 1 && existing[0].Attribute("ref") is null && existing[0].Value == stored) return false;
            if (existing.Count == 0)
            {
                var element = new XElement("property", new XAttribute("name", name)) { Value = stored };
                var before = properties.Elements("property").FirstOrDefault(p => ComparePropertyOrder(name, (string?)p.Attribute("name") ?? "") < 0);
                if (before is not null) before.AddBeforeSelf(element); else properties.Add(element);
                return true;
            }
            existing[0].Attribute("ref")?.Remove();
            existing[0].Value = stored;
            foreach (var dup in existing.Skip(1)) RemoveElement(dup);
            return true;
        });
    }

    /// <summary>Resets a qube property to its default (removes it from qubes.xml, as qubesd does). Returns whether it was set.</summary>
    public static bool ResetProperty(string qubesXmlPath, string qube, string name)
    {
        ValidatePropertyName(name);
        if (NoDefaultProperties.Contains(name))
            throw new QubesFirewallException(ErrorIds.PropertyHasNoDefault, FailureKind.InvalidOperation, $"The property '{name}' has no default value; it cannot be reset, only set.", name);
        return Modify(qubesXmlPath, qube, (domain, _, _) =>
        {
            var existing = domain.Elements("properties").Elements("property").Where(p => (string?)p.Attribute("name") == name).ToList();
            foreach (var p in existing) RemoveElement(p);
            return existing.Count > 0;
        });
    }

    private static void ValidatePropertyName(string? name)
    {
        if (name is null || !PropertyNamePattern().IsMatch(name))
            throw QubesFirewallException.Invalid(ErrorIds.InvalidPropertyName, $"'{Printable(name)}' is not a valid property name (letters, digits and '_', not starting with a digit).", name);
        if (ReadOnlyProperties.Contains(name))
            throw new QubesFirewallException(ErrorIds.PropertyReadOnly, FailureKind.InvalidOperation, $"The property '{name}' is set once when the qube is created and cannot be changed.", name);
    }

    private static string NormalizePropertyValue(QubesInventory inventory, Qube target, string name, string value)
    {
        if (QubeReferenceProperties.Contains(name))
        {
            if (name == "netvm" && target.Class is QubeClass.AdminVM or QubeClass.RemoteVM)
                throw new QubesFirewallException(ErrorIds.PropertyNotApplicable, FailureKind.InvalidOperation, $"'{target.Name}' is an {target.Class}: it has no netvm.", target.Name);
            if (value.Length == 0)
            {
                if (name == "template")
                    throw QubesFirewallException.Invalid(ErrorIds.InvalidPropertyValue, $"'{target.Name}' needs a template; the template cannot be empty.", value);
                return "";
            }
            QubeName.Validate(value);
            var referenced = inventory.Find(value) ?? throw QubesInventory.NotFound(value, inventory.SourcePath);
            if (name == "netvm")
            {
                if (!referenced.ProvidesNetwork)
                    throw QubesFirewallException.Invalid(ErrorIds.NotANetworkQube, $"Cannot set netvm of '{target.Name}' to '{value}': the {value} qube does not provide network (provides_network is False).", value);
                if (referenced.Name == target.Name || inventory.UpstreamOf(referenced.Name).Any(q => q.Name == target.Name))
                    throw QubesFirewallException.Invalid(ErrorIds.NetVmLoop, $"Cannot set netvm of '{target.Name}' to '{value}': it would make a network loop.", value);
            }
            return referenced.Name;
        }
        if (name == "provides_network" && ParseBool(value) == false && inventory.ClientsOf(target.Name).Count > 0)
            throw new QubesFirewallException(ErrorIds.NetworkQubeInUse, FailureKind.InvalidOperation,
                $"'{target.Name}' is still the netvm of {string.Join(", ", inventory.ClientsOf(target.Name).Select(q => q.Name))}: change their netvm first.", target.Name);
        if (BoolProperties.Contains(name))
            return ParseBool(value) switch
            {
                true => "True",
                false => "False",
                null => throw QubesFirewallException.Invalid(ErrorIds.InvalidPropertyValue, $"'{value}' is not a boolean for property '{name}' (use True/False, 1/0, yes/no or on/off).", value),
            };
        if (IntProperties.Contains(name))
            return ParseInt(value)?.ToString(CultureInfo.InvariantCulture)
                ?? throw QubesFirewallException.Invalid(ErrorIds.InvalidPropertyValue, $"'{value}' is not an integer for property '{name}'.", value);
        if (name == "ip")
            return TryCanonicalIPv4(value) ?? throw QubesFirewallException.Invalid(ErrorIds.InvalidPropertyValue, $"'{value}' is not an IPv4 address.", value);
        if (name == "ip6")
            return TryCanonicalIPv6(value) ?? throw QubesFirewallException.Invalid(ErrorIds.InvalidPropertyValue, $"'{value}' is not an IPv6 address.", value);
        if (name == "label")
        {
            if (inventory.Labels.ContainsKey(value)) return value;
            throw QubesFirewallException.Invalid(ErrorIds.InvalidPropertyValue, $"There is no label '{value}' (labels: {string.Join(", ", inventory.Labels.Keys)}).", value);
        }
        return value;
    }

    private static int ComparePropertyOrder(string a, string b)
    {
        var stage = (Stage4Properties.Contains(a) ? 4 : 2).CompareTo(Stage4Properties.Contains(b) ? 4 : 2);
        return stage != 0 ? stage : string.CompareOrdinal(a, b);
    }

    // ---------------------------------------------------------------- read-modify-write

    private static bool Modify(string path, string qube, Func<XElement, QubesInventory, Qube, bool> mutate)
    {
        QubeName.Validate(qube);
        using var _ = FileLock.Acquire(FileLock.PathFor(path));
        var (doc, text) = ReadDocument(path);
        var inventory = BuildInventory(doc, path);
        var target = inventory.Find(qube) ?? throw QubesInventory.NotFound(qube, path);
        var domain = FindDomainElement(doc, target);
        if (!mutate(domain, inventory, target)) return false;
        AtomicFile.WriteAllText(path, Serialize(doc, DeclarationOf(text)));
        return true;
    }

    private static XElement FindDomainElement(XDocument doc, Qube target)
    {
        foreach (var el in doc.Root!.Elements("domains").Elements("domain"))
        {
            var props = ReadProperties(el.Element("properties"));
            var name = props.GetValueOrDefault("name");
            if (string.IsNullOrEmpty(name) && (string?)el.Attribute("class") == "AdminVM") name = "dom0";
            if (name == target.Name) return el;
        }
        // dom0 missing from qubes.xml: qubesd adds it and stores it on its next save.
        var domains = doc.Root!.Element("domains");
        if (domains is null)
        {
            domains = new XElement("domains");
            doc.Root!.Add(domains);
        }
        var dom0 = new XElement("domain", new XAttribute("id", "domain-0"), new XAttribute("class", "AdminVM"),
            new XElement("properties"), new XElement("features"), new XElement("tags"));
        domains.AddFirst(dom0);
        return dom0;
    }

    /// <summary>Removes an element with its indentation; a container left without elements becomes <c>&lt;x/&gt;</c>.</summary>
    private static void RemoveElement(XElement element)
    {
        var parent = element.Parent;
        element.Remove();
        if (parent is not null && !parent.HasElements && parent.Nodes().All(IsFormattingText))
            parent.RemoveNodes();
    }

    // ---------------------------------------------------------------- serializing

    private static string? DeclarationOf(string text)
    {
        var start = text.Length > 0 && text[0] == '\uFEFF' ? 1 : 0;
        if (string.CompareOrdinal(text, start, "<?xml", 0, 5) != 0) return null;
        var end = text.IndexOf("?>", start, StringComparison.Ordinal);
        return end < 0 ? null : text[start..(end + 2)];
    }

    /// <summary>
    /// Writes a document the way qubesd's lxml writes it (<c>write(encoding="UTF-8", pretty_print=True)</c>,
    /// i.e. libxml2's formatted output): two spaces per level, each element on its own line unless
    /// its parent holds text, <c>&lt;x/&gt;</c> for elements without content and <c>&lt;x&gt;&lt;/x&gt;</c>
    /// for an empty text, a newline at the end, no declaration unless <paramref name="declaration"/> is given.
    /// Whitespace between elements is formatting and is regenerated; text inside leaf elements is kept exactly.
    /// </summary>
    internal static string Serialize(XDocument doc, string? declaration = null)
    {
        var sb = new StringBuilder();
        if (declaration is not null) sb.Append(declaration).Append('\n');
        foreach (var node in doc.Nodes())
        {
            if (node is XText) continue; // only whitespace is allowed at document level
            WriteNode(sb, node, 0, format: true);
            sb.Append('\n');
        }
        return sb.ToString();
    }

    private static void WriteNode(StringBuilder sb, XNode node, int level, bool format)
    {
        switch (node)
        {
            case XElement e: WriteElement(sb, e, level, format); break;
            case XCData c: sb.Append("<![CDATA[").Append(c.Value).Append("]]>"); break;
            case XText t: EscapeText(sb, t.Value); break;
            case XComment c: sb.Append("<!--").Append(c.Value).Append("-->"); break;
            case XProcessingInstruction pi:
                sb.Append("<?").Append(pi.Target);
                if (pi.Data.Length > 0) sb.Append(' ').Append(pi.Data);
                sb.Append("?>");
                break;
            case XDocumentType: break; // DTDs are refused when reading
        }
    }

    private static void WriteElement(StringBuilder sb, XElement e, int level, bool format)
    {
        var name = QualifiedName(e, e.Name);
        sb.Append('<').Append(name);
        foreach (var a in e.Attributes())
        {
            sb.Append(' ').Append(AttributeName(e, a)).Append("=\"");
            EscapeAttribute(sb, a.Value);
            sb.Append('"');
        }

        // Whitespace-only text between child elements is indentation, not content.
        var hasElements = e.HasElements;
        var children = e.Nodes().Where(n => !(hasElements && IsFormattingText(n))).ToList();
        if (children.Count == 0)
        {
            if (e.IsEmpty) sb.Append("/>");
            else sb.Append("></").Append(name).Append('>');
            return;
        }

        // libxml2 indents the children only when none of them is text.
        var childFormat = format && !children.Any(n => n is XText);
        sb.Append('>');
        if (childFormat) sb.Append('\n');
        foreach (var child in children)
        {
            if (childFormat && child is XElement or XComment or XProcessingInstruction) sb.Append(' ', 2 * (level + 1));
            WriteNode(sb, child, level + 1, childFormat);
            if (childFormat) sb.Append('\n');
        }
        if (childFormat) sb.Append(' ', 2 * level);
        sb.Append("</").Append(name).Append('>');
    }

    /// <summary>A text node holding only XML whitespace (not CDATA): indentation between elements.</summary>
    private static bool IsFormattingText(XNode n)
    {
        if (n is not XText t || n is XCData) return false;
        foreach (var c in t.Value)
            if (c is not (' ' or '\t' or '\n' or '\r')) return false;
        return true;
    }

    private static string QualifiedName(XElement context, XName name)
    {
        if (name.Namespace == XNamespace.None) return name.LocalName;
        var prefix = context.GetPrefixOfNamespace(name.Namespace);
        return string.IsNullOrEmpty(prefix) ? name.LocalName : prefix + ":" + name.LocalName;
    }

    private static string AttributeName(XElement context, XAttribute a)
    {
        if (a.IsNamespaceDeclaration)
            return a.Name.Namespace == XNamespace.None ? "xmlns" : "xmlns:" + a.Name.LocalName;
        if (a.Name.Namespace == XNamespace.Xml) return "xml:" + a.Name.LocalName;
        return QualifiedName(context, a.Name);
    }

    // libxml2 text escaping with an encoder set (UTF-8): & < > and CR; everything else as is.
    private static void EscapeText(StringBuilder sb, string s)
    {
        foreach (var c in s)
        {
            switch (c)
            {
                case '&': sb.Append("&amp;"); break;
                case '<': sb.Append("&lt;"); break;
                case '>': sb.Append("&gt;"); break;
                case '\r': sb.Append("&#13;"); break;
                default: sb.Append(c); break;
            }
        }
    }

    // libxml2 attribute escaping (xmlBufAttrSerializeTxtContent): & < > " and TAB/LF/CR as character
    // references; non-ASCII as hexadecimal character references (lxml-built documents have no encoding).
    private static void EscapeAttribute(StringBuilder sb, string s)
    {
        for (var i = 0; i < s.Length; i++)
        {
            var c = s[i];
            switch (c)
            {
                case '&': sb.Append("&amp;"); break;
                case '<': sb.Append("&lt;"); break;
                case '>': sb.Append("&gt;"); break;
                case '"': sb.Append("&quot;"); break;
                case '\t': sb.Append("&#9;"); break;
                case '\n': sb.Append("&#10;"); break;
                case '\r': sb.Append("&#13;"); break;
                default:
                    if (c < 0x80) sb.Append(c);
                    else
                    {
                        var cp = char.IsHighSurrogate(c) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]) ? char.ConvertToUtf32(c, s[++i]) : c;
                        sb.Append("&#x").Append(cp.ToString("X", CultureInfo.InvariantCulture)).Append(';');
                    }
                    break;
            }
        }
    }

    // ---------------------------------------------------------------- helpers

    /// <summary>qubesd's boolean literals: 0/no/false/off and 1/yes/true/on, any case. Null otherwise.</summary>
    internal static bool? ParseBool(string? s) => s?.ToLowerInvariant() switch
    {
        "0" or "no" or "false" or "off" => false,
        "1" or "yes" or "true" or "on" => true,
        _ => null,
    };

    private static int? ParseInt(string? s) =>
        s is not null && int.TryParse(s.Trim(), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var v) ? v : null;

    private static int FirstNonPrintable(string s)
    {
        for (var i = 0; i < s.Length; i++)
            if (s[i] is < '\x20' or > '\x7E') return i;
        return -1;
    }

    private static string Describe(char c) => c switch
    {
        '\n' => "a newline",
        '\r' => "a carriage return",
        '\t' => "a tab",
        _ => $"the character U+{(int)c:X4}",
    };

    /// <summary>A value made safe to show in a message: control and non-ASCII characters escaped, long values cut.</summary>
    internal static string Printable(string? s)
    {
        if (s is null) return "";
        var sb = new StringBuilder();
        foreach (var c in s.Length > 80 ? s[..80] : s)
        {
            if (c is >= '\x20' and <= '\x7E') sb.Append(c);
            else sb.Append("\\u").Append(((int)c).ToString("X4", CultureInfo.InvariantCulture));
        }
        if (s.Length > 80) sb.Append("...");
        return sb.ToString();
    }

    private static int LineOf(XObject? o) => o is IXmlLineInfo li && li.HasLineInfo() ? li.LineNumber : 0;
}
