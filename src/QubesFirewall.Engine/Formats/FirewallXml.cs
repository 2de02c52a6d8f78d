using System.Globalization;
using System.Text;
using System.Xml;
using System.Xml.Linq;
using QubesFirewall.Engine.Io;
using QubesFirewall.Engine.Model;

namespace QubesFirewall.Engine.Formats;

/// <summary>A qube's rule list as stored in firewall.xml (expired rules included, as on disk).</summary>
public sealed record FirewallDocument(IReadOnlyList<FirewallRule> Rules, int Version, bool FileExists)
{
    /// <summary>qubesd's default when a qube has no firewall.xml: one rule, accept everything.</summary>
    public static FirewallDocument Default { get; } = new([new FirewallRule { Action = RuleAction.Accept }], 2, false);

    /// <summary>The rules in force at <paramref name="now"/>: the stored list without the expired ones (what qubesd's Get returns).</summary>
    public IReadOnlyList<FirewallRule> VisibleAt(DateTimeOffset now) => Rules.Where(r => !r.IsExpiredAt(now)).ToList();
}

/// <summary>
/// Reads firewall.xml v1 and v2 leniently and writes v2 exactly as qubesd does (lxml pretty print, no declaration,
/// properties in qubesd's order, expired rules dropped). Properties qubesd does not know are kept.
/// </summary>
public static partial class FirewallXml
{
    // qubesd's property order in the file: sorted by (order, name) of its property definitions.
    private static readonly string[] KnownOrder = ["action", "comment", "expire", "dsthost", "proto", "specialtarget", "dstports", "icmptype"];

    public static FirewallDocument Load(string path)
    {
        if (!File.Exists(path)) return FirewallDocument.Default;
        // One read of the whole file into a pooled buffer (a 10,000-rule file is about 3 MB): far fewer system
        // calls than the XML reader's small reads from a FileStream, and no new array on the large object heap.
        PooledBytes bytes;
        try
        {
            bytes = PooledBytes.ReadFile(path);
        }
        catch (FileNotFoundException)
        {
            return FirewallDocument.Default;
        }
        using (bytes) return Parse(bytes.Array, bytes.Length, path);
    }

    private static readonly XmlReaderSettings ReaderSettings = new() { DtdProcessing = DtdProcessing.Prohibit, XmlResolver = null };

    public static FirewallDocument Parse(Stream stream, string sourceName)
    {
        if (stream is MemoryStream memory && memory.TryGetBuffer(out var exposed) && memory.Position == 0 && exposed.Offset == 0)
            return Parse(exposed.Array!, exposed.Count, sourceName);
        var copy = new MemoryStream();
        stream.CopyTo(copy);
        return Parse(copy.GetBuffer(), (int)copy.Length, sourceName);
    }

    private static FirewallDocument Parse(byte[] bytes, int length, string sourceName) =>
        // What qubesd writes is read by a scanner of that layout alone; anything else (or any error) by the XML reader.
        TryReadCanonical(bytes.AsSpan(0, length)) ?? ParseXml(bytes, length, sourceName);

    /// <summary>The file read by .NET's XML reader: any well-formed layout, and the errors with their line.</summary>
    internal static FirewallDocument ParseXml(byte[] bytes, int length, string sourceName)
    {
        try
        {
            // Version 2 (what every qubesd since R4.0 writes) is read in one pass without building a tree.
            if (TryReadV2(new MemoryStream(bytes, 0, length, writable: false), sourceName) is { } document) return document;
        }
        catch (XmlException ex)
        {
            throw Invalid(sourceName, $"not well-formed XML (line {ex.LineNumber}): {ex.Message}");
        }
        XDocument doc;
        try
        {
            using var reader = XmlReader.Create(new MemoryStream(bytes, 0, length, writable: false), ReaderSettings);
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
            _ => throw Invalid(sourceName, $"unsupported firewall.xml version '{RuleGrammar.Printable(version)}'"),
        };
    }

    /// <summary>
    /// Reads a version 2 file with one forward-only reader, with the meaning LINQ to XML gives it: the root's first
    /// <c>rules</c> child, each element in it a rule, the first <c>properties</c> child of a rule, its <c>property</c>
    /// children, a property's value all the text inside it. Rules are built as they are read; the first value error is
    /// held until the whole document was read, so a well-formedness error anywhere wins, as when a tree was built
    /// first. Null when the root is not version 2.
    /// </summary>
    private static FirewallDocument? TryReadV2(Stream stream, string source)
    {
        using var reader = XmlReader.Create(stream, ReaderSettings);
        reader.MoveToContent();
        if ((reader.GetAttribute("version") ?? "1") != "2") return null;
        var state = new V2State(reader, source);
        if (!reader.IsEmptyElement)
        {
            reader.Read();
            while (reader.NodeType != XmlNodeType.EndElement && !reader.EOF)
            {
                if (reader.NodeType == XmlNodeType.Element && state.Rules is null && IsNamed(reader, "rules")) ReadRules(state);
                else if (reader.NodeType == XmlNodeType.Element) reader.Skip();
                else reader.Read();
            }
        }
        while (reader.Read()) { } // the rest of the document must be well-formed too
        if (state.Rules is null) throw Invalid(source, "no <rules> element");
        if (state.Error is not null) throw state.Error;
        return new FirewallDocument(state.Rules, 2, true);
    }

    private sealed class V2State(XmlReader reader, string source)
    {
        public XmlReader Reader { get; } = reader;
        public IXmlLineInfo LineInfo { get; } = (IXmlLineInfo)reader;
        public string Source { get; } = source;
        public List<FirewallRule>? Rules { get; set; }
        /// <summary>The first value error, thrown once the document is known to be well-formed.</summary>
        public QubesFirewallException? Error { get; set; }
        /// <summary>One rule's properties, reused from rule to rule.</summary>
        public List<KeyValuePair<string, string>> Values { get; } = new(8);
    }

    private static bool IsNamed(XmlReader reader, string name) => reader.LocalName == name && reader.NamespaceURI.Length == 0;

    // On a <rules> start tag; returns after its end.
    private static void ReadRules(V2State state)
    {
        var reader = state.Reader;
        state.Rules = [];
        if (reader.IsEmptyElement) { reader.Read(); return; }
        reader.Read();
        while (reader.NodeType != XmlNodeType.EndElement && !reader.EOF)
        {
            if (reader.NodeType != XmlNodeType.Element) { reader.Read(); continue; }
            var line = state.LineInfo.LineNumber;
            state.Values.Clear();
            var found = false;
            if (reader.IsEmptyElement) reader.Read();
            else
            {
                reader.Read();
                while (reader.NodeType != XmlNodeType.EndElement && !reader.EOF)
                {
                    if (reader.NodeType == XmlNodeType.Element && !found && IsNamed(reader, "properties"))
                    {
                        found = true;
                        ReadProperties(state);
                    }
                    else if (reader.NodeType == XmlNodeType.Element) reader.Skip();
                    else reader.Read();
                }
                reader.Read();
            }
            if (state.Error is not null) continue;
            try
            {
                state.Rules.Add(FromProperties(state.Values, state.Source, "line", line));
            }
            catch (QubesFirewallException ex)
            {
                state.Error = ex;
            }
        }
        reader.Read();
    }

    // On a <properties> start tag; returns after its end.
    private static void ReadProperties(V2State state)
    {
        var reader = state.Reader;
        if (reader.IsEmptyElement) { reader.Read(); return; }
        reader.Read();
        while (reader.NodeType != XmlNodeType.EndElement && !reader.EOF)
        {
            if (reader.NodeType == XmlNodeType.Element && IsNamed(reader, "property"))
            {
                var name = reader.GetAttribute("name");
                var line = state.LineInfo.LineNumber;
                var value = ReadText(reader);
                if (name is not null) state.Values.Add(new(name, value));
                else state.Error ??= Invalid(state.Source, $"a property without a name (line {line})");
            }
            else if (reader.NodeType == XmlNodeType.Element) reader.Skip();
            else reader.Read();
        }
        reader.Read();
    }

    // An element's value as XElement.Value gives it: every text node inside it, nested elements included. Returns after its end.
    private static string ReadText(XmlReader reader)
    {
        if (reader.IsEmptyElement) { reader.Read(); return ""; }
        var depth = reader.Depth;
        string? single = null;
        StringBuilder? sb = null;
        reader.Read();
        while (!(reader.NodeType == XmlNodeType.EndElement && reader.Depth == depth) && !reader.EOF)
        {
            if (reader.NodeType is XmlNodeType.Text or XmlNodeType.CDATA or XmlNodeType.Whitespace or XmlNodeType.SignificantWhitespace)
            {
                if (single is null) single = reader.Value;
                else (sb ??= new StringBuilder(single)).Append(reader.Value);
            }
            reader.Read();
        }
        reader.Read();
        return sb?.ToString() ?? single ?? "";
    }

    /// <summary>
    /// Builds a rule from stored properties. Values today's qubesd would refuse but an older one
    /// accepted (port 65536, an empty host) are kept and listed in Problems; values that make no
    /// sense at all make the file unreadable, as they do for qubesd.
    /// </summary>
    internal static FirewallRule FromProperties(IReadOnlyList<KeyValuePair<string, string>> values, string where) =>
        FromProperties(values, where, "", 0);

    /// <summary>As above; the place is "<paramref name="source"/>, <paramref name="unit"/> <paramref name="number"/>", put together only for an error.</summary>
    internal static FirewallRule FromProperties(IReadOnlyList<KeyValuePair<string, string>> values, string source, string unit, int number)
    {
        string Where() => unit.Length == 0 ? source : $"{source}, {unit} {number}";
        List<string>? problems = null;
        List<KeyValuePair<string, string>>? unknown = null;
        RuleAction? action = null;
        RuleProtocol? proto = null;
        HostSpec? host = null;
        string? rawHost = null;
        PortRange? ports = null;
        int? icmp = null;
        SpecialTarget? special = null;
        long? expire = null;
        string? comment = null;
        for (var i = 0; i < values.Count; i++)
        {
            var (name, value) = values[i];
            // A rule has a handful of properties: a scan of the earlier ones costs less than a set per rule.
            for (var j = 0; j < i; j++)
                if (string.Equals(values[j].Key, name, StringComparison.Ordinal)) throw Invalid(Where(), $"property '{name}' appears twice");
            switch (name)
            {
                case "action":
                    action = RuleText.ParseAction(value)
                        ?? throw Invalid(Where(), $"action '{RuleGrammar.Printable(value)}' is neither accept nor drop; qubesd fails to load such a file");
                    break;
                case "proto":
                    proto = RuleText.ParseProtocol(value)
                        ?? throw Invalid(Where(), $"proto '{RuleGrammar.Printable(value)}' is not tcp, udp or icmp");
                    break;
                case "dsthost":
                    if (HostSpec.TryParse(value, out var parsed, out var hostError))
                        host = !value.Contains('/') || parsed!.Value == value ? parsed : parsed with { Value = value };
                    else
                    {
                        rawHost = value;
                        (problems ??= []).Add($"dsthost '{RuleGrammar.Printable(value)}' is invalid: {hostError}");
                    }
                    break;
                case "dstports":
                    if (PortRange.TryParse(value, strict: false, out var range, out var portError))
                    {
                        ports = range;
                        if (!range.IsValid) (problems ??= []).Add($"dstports '{value}' is out of range (0-65535, first ≤ last); qubesd of R4.3 refuses it");
                    }
                    else throw Invalid(Where(), $"dstports '{RuleGrammar.Printable(value)}': {portError}");
                    break;
                case "icmptype":
                    if (value.Length is 0 or > 3 || !value.All(char.IsAsciiDigit) || int.Parse(value, CultureInfo.InvariantCulture) > 255)
                        throw Invalid(Where(), $"icmptype '{RuleGrammar.Printable(value)}' is not 0-255");
                    icmp = int.Parse(value, CultureInfo.InvariantCulture);
                    break;
                case "specialtarget":
                    if (value != "dns") throw Invalid(Where(), $"specialtarget '{RuleGrammar.Printable(value)}' is not dns");
                    special = SpecialTarget.Dns;
                    break;
                case "expire":
                    if (value.Length is 0 or > 12 || !value.All(char.IsAsciiDigit)) throw Invalid(Where(), $"expire '{RuleGrammar.Printable(value)}' is not a Unix time");
                    expire = long.Parse(value, CultureInfo.InvariantCulture);
                    break;
                case "comment":
                    if (!RuleGrammar.IsComment(value)) (problems ??= []).Add("the comment has characters qubesd refuses");
                    comment = value.Length == 0 ? null : value;
                    break;
                default:
                    (unknown ??= []).Add(new(name, value));
                    break;
            }
        }
        if (action is null) throw Invalid(Where(), "a rule without an action");
        if (ports is not null && proto is not (RuleProtocol.Tcp or RuleProtocol.Udp))
            (problems ??= []).Add("dstports without proto tcp or udp");
        if (icmp is not null && proto != RuleProtocol.Icmp)
            (problems ??= []).Add("icmptype without proto icmp");
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
            UnknownProperties = unknown ?? (IReadOnlyList<KeyValuePair<string, string>>)[],
            Problems = problems ?? (IReadOnlyList<string>)[],
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
        using var bytes = RenderUtf8(rules, now);
        return Encoding.UTF8.GetString(bytes.Span);
    }

    /// <summary>As <see cref="Render"/>, the file's bytes, written straight into a pooled buffer the caller disposes.</summary>
    internal static PooledBytes RenderUtf8(IEnumerable<FirewallRule> rules, DateTimeOffset now)
    {
        var kept = rules.Where(r => !r.IsExpiredAt(now)).ToList();
        foreach (var rule in kept) rule.Validate();
        var file = new PooledBytes(64 + kept.Count * 320);
        try
        {
            // lxml writes no XML declaration for UTF-8 unless asked, and qubesd does not ask.
            file.Append("<firewall version=\"2\">\n"u8);
            if (kept.Count == 0)
            {
                file.Append("  <rules/>\n"u8);
            }
            else
            {
                file.Append("  <rules>\n"u8);
                foreach (var rule in kept)
                {
                    file.Append("    <rule>\n      <properties>\n"u8);
                    VisitStored(rule, file, static (file, known, name, value) =>
                    {
                        // A known name's opening tag is made once, in UTF-8 (six properties a rule, 10,000 rules a file).
                        if (known >= 0) file.Append(KnownOpenTags[known]);
                        else file.Append("        <property name=\""u8).Append(name).Append("\""u8);
                        if (value.Length == 0) file.Append("/>\n"u8);
                        else AppendEscaped(file.Append(">"u8), value).Append("</property>\n"u8);
                    });
                    file.Append("      </properties>\n    </rule>\n"u8);
                }
                file.Append("  </rules>\n"u8);
            }
            file.Append("</firewall>\n"u8);
            return file;
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    /// <summary>The rule's properties in the order and spelling qubesd stores them.</summary>
    public static IEnumerable<KeyValuePair<string, string>> StoredProperties(FirewallRule rule)
    {
        var list = new List<KeyValuePair<string, string>>(KnownOrder.Length + rule.UnknownProperties.Count);
        VisitStored(rule, list, static (list, _, name, value) => list.Add(new(name, value)));
        return list;
    }

    // Each stored property in KnownOrder, then the unknown ones as read; no map or list per rule (a 10,000-rule file renders them all).
    // Each visit gets the property's index in KnownOrder (-1 for an unknown property) with its name.
    private static void VisitStored<TState>(FirewallRule rule, TState state, Action<TState, int, string, string> visit)
    {
        visit(state, 0, KnownOrder[0], RuleText.ActionText(rule.Action));
        if (rule.Comment is { Length: > 0 } c) visit(state, 1, KnownOrder[1], c);
        if (rule.Expire is { } e) visit(state, 2, KnownOrder[2], e.ToString(CultureInfo.InvariantCulture));
        if (rule.DstHost is { } h) visit(state, 3, KnownOrder[3], h.Value);
        if (rule.Protocol is { } p) visit(state, 4, KnownOrder[4], RuleText.ProtocolText(p));
        if (rule.SpecialTarget is not null) visit(state, 5, KnownOrder[5], "dns");
        if (rule.DstPorts is { } ports) visit(state, 6, KnownOrder[6], ports.ToString());
        if (rule.IcmpType is { } i) visit(state, 7, KnownOrder[7], i.ToString(CultureInfo.InvariantCulture));
        foreach (var (name, value) in rule.UnknownProperties) visit(state, -1, name, value);
    }

    // The opening tag of each known property as rendered: `        <property name="action"` (UTF-8).
    private static readonly byte[][] KnownOpenTags = [.. KnownOrder.Select(name => Encoding.UTF8.GetBytes($"        <property name=\"{name}\""))];

    private static readonly System.Buffers.SearchValues<char> Escaped = System.Buffers.SearchValues.Create("&<>");

    // The value with &, < and > as entities (what lxml escapes in text).
    private static PooledBytes AppendEscaped(PooledBytes file, ReadOnlySpan<char> value)
    {
        while (true)
        {
            var special = value.IndexOfAny(Escaped);
            if (special < 0) return file.Append(value);
            file.Append(value[..special]).Append(value[special] switch { '&' => "&amp;"u8, '<' => "&lt;"u8, _ => "&gt;"u8 });
            value = value[(special + 1)..];
        }
    }

    private static QubesFirewallException Invalid(string source, string why) =>
        new(ErrorIds.InvalidFirewallXml, FailureKind.InvalidData, $"Cannot read {source}: {why}.", source);
}
