using System.Globalization;
using System.Text;
using System.Xml;
using System.Xml.Linq;
using QubesFirewall.Engine.Model;

namespace QubesFirewall.Engine.Formats;

/// <summary>A qube's rule list as stored in firewall.xml (expired rules included, as on disk).</summary>
public sealed record FirewallDocument(IReadOnlyList<FirewallRule> Rules, int Version, bool FileExists)
{
    /// <summary>qubesd's default when a qube has no firewall.xml: one rule, accept everything.</summary>
    public static FirewallDocument Default { get; } = new([new FirewallRule { Action = RuleAction.Accept }], 2, false);
}

/// <summary>
/// Reads firewall.xml v1 and v2 leniently and writes v2 exactly as qubesd does (lxml pretty print, no declaration,
/// properties in qubesd's order, expired rules dropped). Properties qubesd does not know are kept.
/// </summary>
public static class FirewallXml
{
    // qubesd's property order in the file: sorted by (order, name) of its property definitions.
    private static readonly string[] KnownOrder = ["action", "comment", "expire", "dsthost", "proto", "specialtarget", "dstports", "icmptype"];

    public static FirewallDocument Load(string path)
    {
        if (!File.Exists(path)) return FirewallDocument.Default;
        try
        {
            using var stream = File.OpenRead(path);
            return Parse(stream, path);
        }
        catch (FileNotFoundException)
        {
            return FirewallDocument.Default;
        }
    }

    public static FirewallDocument Parse(Stream stream, string sourceName)
    {
        XDocument doc;
        try
        {
            using var reader = XmlReader.Create(stream, new XmlReaderSettings { DtdProcessing = DtdProcessing.Prohibit, XmlResolver = null });
            doc = XDocument.Load(reader, LoadOptions.SetLineInfo);
        }
        catch (XmlException ex)
        {
            throw Invalid(sourceName, $"not well-formed XML (line {ex.LineNumber}): {ex.Message}");
        }
        var root = doc.Root!;
        // Like qubesd, only the version attribute matters (Qubes 3.x named the root QubesFirewallRules).
        var version = (string?)root.Attribute("version") ?? "1";
        return version switch
        {
            "1" => new FirewallDocument(ReadV1(root, sourceName), 1, true),
            "2" => new FirewallDocument(ReadV2(root, sourceName), 2, true),
            _ => throw Invalid(sourceName, $"unsupported firewall.xml version '{RuleGrammar.Printable(version)}'"),
        };
    }

    private static List<FirewallRule> ReadV2(XElement root, string source)
    {
        var rulesElement = root.Element("rules") ?? throw Invalid(source, "no <rules> element");
        var rules = new List<FirewallRule>();
        foreach (var ruleElement in rulesElement.Elements())
        {
            var line = ((IXmlLineInfo)ruleElement).LineNumber;
            var values = new List<KeyValuePair<string, string>>();
            foreach (var prop in ruleElement.Element("properties")?.Elements("property") ?? [])
            {
                var name = (string?)prop.Attribute("name") ?? throw Invalid(source, $"a property without a name (line {((IXmlLineInfo)prop).LineNumber})");
                values.Add(new(name, prop.Value));
            }
            rules.Add(FromProperties(values, $"{source}, line {line}"));
        }
        return rules;
    }

    /// <summary>
    /// Builds a rule from stored properties. Values today's qubesd would refuse but an older one
    /// accepted (port 65536, an empty host) are kept and listed in Problems; values that make no
    /// sense at all make the file unreadable, as they do for qubesd.
    /// </summary>
    internal static FirewallRule FromProperties(IReadOnlyList<KeyValuePair<string, string>> values, string where)
    {
        var problems = new List<string>();
        var unknown = new List<KeyValuePair<string, string>>();
        RuleAction? action = null;
        RuleProtocol? proto = null;
        HostSpec? host = null;
        string? rawHost = null;
        PortRange? ports = null;
        int? icmp = null;
        SpecialTarget? special = null;
        long? expire = null;
        string? comment = null;
        var seen = new HashSet<string>(StringComparer.Ordinal);

        foreach (var (name, value) in values)
        {
            if (!seen.Add(name)) throw Invalid(where, $"property '{name}' appears twice");
            switch (name)
            {
                case "action":
                    action = RuleText.ParseAction(value)
                        ?? throw Invalid(where, $"action '{RuleGrammar.Printable(value)}' is neither accept nor drop; qubesd fails to load such a file");
                    break;
                case "proto":
                    proto = RuleText.ParseProtocol(value)
                        ?? throw Invalid(where, $"proto '{RuleGrammar.Printable(value)}' is not tcp, udp or icmp");
                    break;
                case "dsthost":
                    if (HostSpec.TryParse(value, out var parsed, out var hostError))
                        host = parsed! with { Value = value.Contains('/') ? value : parsed!.Value };
                    else
                    {
                        rawHost = value;
                        problems.Add($"dsthost '{RuleGrammar.Printable(value)}' is invalid: {hostError}");
                    }
                    break;
                case "dstports":
                    if (PortRange.TryParse(value, strict: false, out var range, out var portError))
                    {
                        ports = range;
                        if (!range.IsValid) problems.Add($"dstports '{value}' is out of range (0-65535, first ≤ last); qubesd of R4.3 refuses it");
                    }
                    else throw Invalid(where, $"dstports '{RuleGrammar.Printable(value)}': {portError}");
                    break;
                case "icmptype":
                    if (value.Length is 0 or > 3 || !value.All(char.IsAsciiDigit) || int.Parse(value, CultureInfo.InvariantCulture) > 255)
                        throw Invalid(where, $"icmptype '{RuleGrammar.Printable(value)}' is not 0-255");
                    icmp = int.Parse(value, CultureInfo.InvariantCulture);
                    break;
                case "specialtarget":
                    if (value != "dns") throw Invalid(where, $"specialtarget '{RuleGrammar.Printable(value)}' is not dns");
                    special = SpecialTarget.Dns;
                    break;
                case "expire":
                    if (value.Length is 0 or > 12 || !value.All(char.IsAsciiDigit)) throw Invalid(where, $"expire '{RuleGrammar.Printable(value)}' is not a Unix time");
                    expire = long.Parse(value, CultureInfo.InvariantCulture);
                    break;
                case "comment":
                    if (value.Any(c => !RuleGrammar.IsCommentChar(c))) problems.Add("the comment has characters qubesd refuses");
                    comment = value.Length == 0 ? null : value;
                    break;
                default:
                    unknown.Add(new(name, value));
                    break;
            }
        }
        if (action is null) throw Invalid(where, "a rule without an action");
        if (ports is not null && proto is not (RuleProtocol.Tcp or RuleProtocol.Udp))
            problems.Add("dstports without proto tcp or udp");
        if (icmp is not null && proto != RuleProtocol.Icmp)
            problems.Add("icmptype without proto icmp");
        return new FirewallRule
        {
            Action = action.Value,
            Protocol = proto,
            DstHost = host,
            RawDstHost = rawHost,
            DstPorts = ports,
            IcmpType = icmp,
            SpecialTarget = special,
            Expire = expire,
            Comment = comment,
            UnknownProperties = unknown,
            Problems = problems,
        };
    }

    // Qubes R3.x format: policy and service attributes on the root, one <rule> element per exception.
    private static List<FirewallRule> ReadV1(XElement root, string source)
    {
        var policy = (string?)root.Attribute("policy");
        if (policy is not ("allow" or "deny")) throw Invalid(source, "a version 1 file needs policy=\"allow\" or \"deny\"");
        var defaultAccept = policy == "allow";
        RuleAction Translate(string attribute) => ((string?)root.Attribute(attribute) ?? policy) == "allow" ? RuleAction.Accept : RuleAction.Drop;

        var rules = new List<FirewallRule>
        {
            new() { Action = Translate("dns"), SpecialTarget = SpecialTarget.Dns },
            new() { Action = Translate("icmp"), Protocol = RuleProtocol.Icmp },
        };
        var exceptionAction = defaultAccept ? RuleAction.Drop : RuleAction.Accept;
        foreach (var element in root.Elements())
        {
            var where = $"{source}, line {((IXmlLineInfo)element).LineNumber}";
            var props = new List<KeyValuePair<string, string>> { new("action", RuleAction.Accept == exceptionAction ? "accept" : "drop") };
            var address = (string?)element.Attribute("address");
            if (!string.IsNullOrEmpty(address))
            {
                var netmask = (string?)element.Attribute("netmask") ?? "32";
                var bare = HostSpec.TryParse(address, out var parsed, out _) && parsed!.Kind == HostKind.Name;
                props.Add(new("dsthost", bare ? address : $"{address}/{netmask}"));
            }
            var proto = (string?)element.Attribute("proto");
            var port = (string?)element.Attribute("port");
            var toport = (string?)element.Attribute("toport");
            string? dstports = !string.IsNullOrEmpty(port) && !string.IsNullOrEmpty(toport) ? $"{port}-{toport}" : string.IsNullOrEmpty(port) ? null : port;
            if (dstports is not null && string.IsNullOrEmpty(proto)) proto = "tcp"; // v1: a port implied TCP
            if (proto == "any") proto = null;
            if (!string.IsNullOrEmpty(proto)) props.Add(new("proto", proto));
            if (dstports is not null) props.Add(new("dstports", dstports));
            var expire = (string?)element.Attribute("expire");
            if (!string.IsNullOrEmpty(expire)) props.Add(new("expire", expire));
            rules.Add(FromProperties(props, where));
        }
        if (defaultAccept) rules.Add(new FirewallRule { Action = RuleAction.Accept });
        return rules;
    }

    /// <summary>
    /// Renders the v2 file as qubesd writes it. Expired rules (at <paramref name="now"/>) are left
    /// out, as qubesd drops them when it saves. Refuses (throws) if any rule is invalid: nothing
    /// invalid is ever written.
    /// </summary>
    public static string Render(IEnumerable<FirewallRule> rules, DateTimeOffset now)
    {
        var kept = rules.Where(r => !r.IsExpiredAt(now)).ToList();
        foreach (var rule in kept) rule.Validate();
        var sb = new StringBuilder();
        // lxml writes no XML declaration for UTF-8 unless asked, and qubesd does not ask.
        sb.Append("<firewall version=\"2\">\n");
        if (kept.Count == 0)
        {
            sb.Append("  <rules/>\n");
        }
        else
        {
            sb.Append("  <rules>\n");
            foreach (var rule in kept)
            {
                sb.Append("    <rule>\n      <properties>\n");
                foreach (var (name, value) in StoredProperties(rule))
                {
                    sb.Append("        <property name=\"").Append(name).Append('"');
                    if (value.Length == 0) sb.Append("/>\n");
                    else sb.Append('>').Append(Escape(value)).Append("</property>\n");
                }
                sb.Append("      </properties>\n    </rule>\n");
            }
            sb.Append("  </rules>\n");
        }
        sb.Append("</firewall>\n");
        return sb.ToString();
    }

    /// <summary>The rule's properties in the order and spelling qubesd stores them.</summary>
    public static IEnumerable<KeyValuePair<string, string>> StoredProperties(FirewallRule rule)
    {
        var known = new Dictionary<string, string> { ["action"] = RuleText.ActionText(rule.Action) };
        if (rule.Comment is { Length: > 0 } c) known["comment"] = c;
        if (rule.Expire is { } e) known["expire"] = e.ToString(CultureInfo.InvariantCulture);
        if (rule.DstHost is { } h) known["dsthost"] = h.Value;
        if (rule.Protocol is { } p) known["proto"] = RuleText.ProtocolText(p);
        if (rule.SpecialTarget is not null) known["specialtarget"] = "dns";
        if (rule.DstPorts is { } ports) known["dstports"] = ports.ToString();
        if (rule.IcmpType is { } i) known["icmptype"] = i.ToString(CultureInfo.InvariantCulture);
        foreach (var name in KnownOrder)
            if (known.TryGetValue(name, out var v)) yield return new(name, v);
        foreach (var kv in rule.UnknownProperties) yield return kv;
    }

    private static string Escape(string value) => value.Replace("&", "&amp;").Replace("<", "&lt;").Replace(">", "&gt;");

    private static QubesFirewallException Invalid(string source, string why) =>
        new("InvalidFirewallXml", FailureKind.InvalidData, $"Cannot read {source}: {why}.", source);
}
