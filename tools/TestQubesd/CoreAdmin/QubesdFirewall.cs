using System.Globalization;
using System.Xml.Linq;

namespace QubesFirewall.TestQubesd.CoreAdmin;

/// <summary>
/// A qube's rule list as qubesd loads and saves it: core-admin <c>qubes/firewall.py</c> class
/// <c>Firewall</c> (snapshot 1ad5f9b8; line numbers of that file).
/// </summary>
public static class QubesdFirewall
{
    /// <summary>
    /// <c>Firewall.load</c> (l.526-545): no file means the default list, one rule <c>action=accept</c>
    /// (<c>load_defaults</c>, l.507); <c>version</c> "1" (the default) or "2", anything else refused.
    /// </summary>
    public static List<QubesdRule> Load(string path, bool acceptPort65536 = false)
    {
        if (!File.Exists(path)) return [QubesdRule.Of("accept")];
        var root = XDocument.Load(path).Root!;
        return ((string?)root.Attribute("version") ?? "1") switch
        {
            "1" => LoadV1(root),
            "2" => LoadV2(root, acceptPort65536),
            var v => throw new InvalidDataException($"Unsupported firewall.xml version: {v}"),
        };
    }

    // load_v2 (l.581-586): each element of <rules> is a Rule built from its <properties>/<property>
    // (PropertyHolder.load_properties, qubes/__init__.py l.737-757: the value is the ref attribute or the text).
    private static List<QubesdRule> LoadV2(XElement root, bool acceptPort65536) =>
        root.Element("rules")!.Elements().Select(rule => QubesdRule.FromStored(
            rule.Elements("properties").Elements("property").Select(p =>
                new KeyValuePair<string, string>((string)p.Attribute("name")!, (string?)p.Attribute("ref") ?? p.Value)), acceptPort65536)).ToList();

    // load_v1 (l.547-579), the format before Qubes 4.0: policy allow|deny; the dns and icmp attributes (the
    // policy when absent) give the first two rules, a DNS rule and an ICMP rule; each <rule> element takes
    // the action opposite to the policy (from_xml_v1, l.398-443); an allow policy ends with action=accept.
    private static List<QubesdRule> LoadV1(XElement root)
    {
        var policy = (string?)root.Attribute("policy");
        if (policy is not ("allow" or "deny")) throw new InvalidDataException("firewall.xml v1 policy must be allow or deny");
        string Translate(string key) => ((string?)root.Attribute(key) ?? policy) == "allow" ? "accept" : "drop";
        var rules = new List<QubesdRule>
        {
            QubesdRule.Of(Translate("dns"), specialTarget: "dns"),
            QubesdRule.Of(Translate("icmp"), proto: "icmp"),
        };
        var action = policy == "allow" ? "drop" : "accept";
        foreach (var element in root.Elements()) rules.Add(FromXmlV1(element, action));
        if (policy == "allow") rules.Add(QubesdRule.Of("accept"));
        return rules;
    }

    // Rule.from_xml_v1 (l.398-443): netmask defaults to 32; port and toport make "port-toport"; a port
    // without proto means tcp; proto "any" means no proto.
    private static QubesdRule FromXmlV1(XElement node, string action)
    {
        var netmaskText = (string?)node.Attribute("netmask");
        var netmask = netmaskText is null ? 32 : int.Parse(netmaskText, NumberStyles.AllowLeadingSign | NumberStyles.AllowLeadingWhite | NumberStyles.AllowTrailingWhite, CultureInfo.InvariantCulture);
        var address = (string?)node.Attribute("address");
        var proto = (string?)node.Attribute("proto");
        var port = (string?)node.Attribute("port");
        var toport = (string?)node.Attribute("toport");
        var dstports = !string.IsNullOrEmpty(port) && !string.IsNullOrEmpty(toport) ? port + "-" + toport : string.IsNullOrEmpty(port) ? null : port;
        if (dstports is not null && string.IsNullOrEmpty(proto)) proto = "tcp";
        if (proto == "any") proto = null;
        var expire = (string?)node.Attribute("expire");
        return QubesdRule.Of(action, proto: string.IsNullOrEmpty(proto) ? null : proto, dstHost: string.IsNullOrEmpty(address) ? null : address,
            prefixLength: netmask, dstPorts: dstports, expire: string.IsNullOrEmpty(expire) ? null : expire);
    }

    /// <summary>
    /// <c>Firewall.save</c> (l.595-625): always version 2; expired rules are left out; each rule is
    /// <c>&lt;rule&gt;&lt;properties&gt;</c> with one <c>&lt;property name=".."&gt;value&lt;/property&gt;</c> per set
    /// property in property_list order (<c>xml_properties</c>, qubes/__init__.py l.759-791); mode 0664.
    /// </summary>
    public static void Save(string path, IEnumerable<QubesdRule> rules, DateTimeOffset now) =>
        LxmlFile.Replace(path, Render(rules, now),
            UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.OtherRead);

    /// <summary>The text <see cref="Save"/> writes.</summary>
    public static string Render(IEnumerable<QubesdRule> rules, DateTimeOffset now)
    {
        var xmlRules = new XElement("rules");
        foreach (var rule in rules.Where(r => !r.IsExpiredAt(now)))
            xmlRules.Add(new XElement("rule", new XElement("properties",
                rule.StoredProperties.Select(p => new XElement("property", new XAttribute("name", p.Key), p.Value)))));
        return LxmlFile.Render(new XElement("firewall", new XAttribute("version", "2"), xmlRules));
    }

    /// <summary>
    /// <c>Firewall.qdb_entries(addr_family)</c> (l.640-657): "policy" = "drop" (the <c>policy</c> property,
    /// l.498), then one key per rule numbered by its index in the whole list ("{:04}"), leaving out expired
    /// rules and rules whose dsthost is of the other family (a host name belongs to both).
    /// </summary>
    public static List<KeyValuePair<string, string>> QubesDbEntries(IReadOnlyList<QubesdRule> rules, int family, DateTimeOffset now)
    {
        var entries = new List<KeyValuePair<string, string>> { new("policy", "drop") };
        var exclude = family == 6 ? "dst4" : "dst6";
        for (var i = 0; i < rules.Count; i++)
        {
            if (rules[i].IsExpiredAt(now) || rules[i].DstHostType == exclude) continue;
            entries.Add(new(i.ToString("D4", CultureInfo.InvariantCulture), rules[i].QubesDbRule(now)!));
        }
        return entries;
    }
}
