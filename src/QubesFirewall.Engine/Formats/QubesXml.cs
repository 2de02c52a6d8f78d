using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;
using System.Xml;
using System.Xml.Linq;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Validation;
using static QubesFirewall.Engine.Validation.PrintableAscii;

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

    private static int LineOf(XObject? o) => o is IXmlLineInfo li && li.HasLineInfo() ? li.LineNumber : 0;
}
