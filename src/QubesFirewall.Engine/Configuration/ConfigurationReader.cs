using System.Globalization;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;
using QubesFirewall.Engine.Validation;

namespace QubesFirewall.Engine.Configuration;

/// <summary>
/// Turns a file's <see cref="DataNode"/>s into a <see cref="NetworkConfiguration"/>, validating every value as
/// strictly as the cmdlets do (the same model constructors: <see cref="RuleText.Parse"/>, <see cref="PortForward.Create"/>,
/// <see cref="InterVmLink.Create"/>, <see cref="TcpBinding.Create"/>). Unknown keys, wrong types, duplicates and
/// missing required keys are refused with their line; nothing of a refused file is used.
/// <para>The format (version 1):</para>
/// <code>
/// @{
///     Version = 1
///     Qubes = @{
///         'work' = @{
///             NetVM = '(default)'        # or '' (no network), or a qube's name
///             IPv6 = 'Inherit'           # Enabled, Disabled or Inherit
///             Rules = @(                 # qvm-firewall's text form, in order
///                 'action=accept specialtarget=dns'
///                 'action=drop'
///             )
///             Forwards = @(
///                 @{ Protocol = 'tcp'; Port = 443; TargetPort = 443; Type = 'External'; AllowFrom = @('192.168.1.0/24') }
///             )
///             Links = @( @{ To = 'db'; Protocol = 'tcp'; Port = '5432' } )
///             Bindings = @( @{ To = 'mail'; Port = 444; LocalPort = 10444; Permanent = $true } )
///         }
///     }
/// }
/// </code>
/// </summary>
public static class ConfigurationReader
{
    private static readonly string[] RootKeys = ["Version", "Qubes"];
    private static readonly string[] QubeKeys = ["NetVM", "IPv6", "Rules", "Forwards", "Links", "Bindings"];
    private static readonly string[] ForwardKeys = ["Protocol", "Port", "TargetPort", "Type", "AllowFrom", "Interface", "Expire", "Comment"];
    private static readonly string[] LinkKeys = ["To", "Protocol", "Port"];
    private static readonly string[] BindingKeys = ["To", "Port", "LocalPort", "Permanent"];

    /// <summary>The word for an unrestricted forward's sources: <c>AllowFrom = 'Any'</c> must be written out.</summary>
    public const string AnySource = "Any";

    /// <summary>Reads and validates a file's text in the given format.</summary>
    public static NetworkConfiguration Read(string text, ConfigurationFormat format) =>
        Read(format == ConfigurationFormat.Json ? JsonConfigReader.Parse(text) : Psd1Reader.Parse(text));

    /// <summary>The format a file name implies: .json is JSON, anything else the .psd1 subset.</summary>
    public static ConfigurationFormat FormatOf(string path) =>
        path.EndsWith(".json", StringComparison.OrdinalIgnoreCase) ? ConfigurationFormat.Json : ConfigurationFormat.Psd1;

    public static NetworkConfiguration Read(DataNode root)
    {
        var map = Map(root, "the file");
        var entries = Keys(map, RootKeys, "the file");
        if (!entries.TryGetValue("Version", out var version)) throw DataLimits.Error(map.Line, "Version = 1 is missing");
        var v = Integer(version.Value, "Version");
        if (v != NetworkConfiguration.FormatVersion)
            throw DataLimits.Error(version.Line, $"Version is {v.ToString(CultureInfo.InvariantCulture)}; this module reads version {NetworkConfiguration.FormatVersion}");
        if (!entries.TryGetValue("Qubes", out var qubesEntry)) throw DataLimits.Error(map.Line, "Qubes = @{ ... } is missing");
        var qubes = new List<QubeConfiguration>();
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var entry in Map(qubesEntry.Value, "Qubes").Entries)
        {
            if (!QubeName.IsValid(entry.Key))
                throw DataLimits.Error(entry.Line, $"'{RuleGrammar.Printable(entry.Key)}' is not a qube name (1-31 ASCII letters, digits, '_', '.', '-', starting with a letter)");
            if (entry.Key == "dom0") throw DataLimits.Error(entry.Line, "dom0 has no Qubes firewall, netvm or forwards: leave it out");
            if (!names.Add(entry.Key)) throw DataLimits.Error(entry.Line, $"the qube '{entry.Key}' is given twice");
            qubes.Add(ReadQube(entry));
        }
        return new NetworkConfiguration(qubes.OrderBy(q => q.Name, StringComparer.Ordinal).ToList());
    }

    private static QubeConfiguration ReadQube(DataEntry entry)
    {
        var name = entry.Key;
        var where = $"qube '{name}'";
        var keys = Keys(Map(entry.Value, where), QubeKeys, where);
        var qube = new QubeConfiguration { Name = name, Line = entry.Line };
        if (keys.TryGetValue("NetVM", out var netvm))
        {
            var text = String(netvm.Value, $"NetVM of {where}");
            qube = qube with
            {
                NetVM = text switch
                {
                    NetVmSetting.DefaultText => NetVmSetting.Default,
                    "" => NetVmSetting.None,
                    _ when text == name => throw DataLimits.Error(netvm.Line, $"NetVM of {where} names the qube itself"),
                    _ when text == "dom0" => throw DataLimits.Error(netvm.Line, $"NetVM of {where} is dom0, which provides no network"),
                    _ when QubeName.IsValid(text) => new NetVmSetting(NetVmMode.Qube, text),
                    _ => throw DataLimits.Error(netvm.Line, $"NetVM of {where} is '{RuleGrammar.Printable(text)}': use '{NetVmSetting.DefaultText}', '' (no network) or a qube's name"),
                },
            };
        }
        if (keys.TryGetValue("IPv6", out var ipv6))
            qube = qube with { IPv6 = EnumValue<IPv6Setting>(ipv6.Value, $"IPv6 of {where}") };
        if (keys.TryGetValue("Rules", out var rules))
            qube = qube with { Rules = ReadRules(rules, where) };
        if (keys.TryGetValue("Forwards", out var forwards))
            qube = qube with { Forwards = ReadItems(forwards, where, "forward", (m, w) => ReadForward(name, m, w), f => f.FeatureName, Sort: f => $"{f.ProtocolText}.{f.Port:D5}") };
        if (keys.TryGetValue("Links", out var links))
            qube = qube with { Links = ReadItems(links, where, "link", (m, w) => ReadLink(name, m, w), l => l.FeatureName, Sort: l => LinkSortKey(l)) };
        if (keys.TryGetValue("Bindings", out var bindings))
            qube = qube with { Bindings = ReadItems(bindings, where, "binding", (m, w) => ReadBinding(name, m, w), b => b.FeatureName, Sort: b => $"{b.To}:{b.Port:D5}") };
        return qube;
    }

    internal static string LinkSortKey(InterVmLink l) =>
        $"{l.To}:{l.ProtocolText}:{(l.Ports.IsAll ? "00000" : l.Ports.First.ToString("D5", CultureInfo.InvariantCulture))}:{l.Ports.Last:D5}";

    private static List<FirewallRule> ReadRules(DataEntry entry, string where)
    {
        var list = List(entry.Value, $"Rules of {where}");
        var rules = new List<FirewallRule>();
        var texts = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var item in list.Items)
        {
            var text = String(item, $"a rule of {where}");
            if (text.Contains("expire=+", StringComparison.Ordinal))
                throw DataLimits.Error(item.Line, $"rule '{text}' of {where}: expire=+SECONDS would mean another time at every run; write the Unix time");
            FirewallRule rule;
            try
            {
                rule = RuleText.Parse(text);
            }
            catch (QubesFirewallException ex)
            {
                throw DataLimits.Error(item.Line, $"{where}: {ex.Message}");
            }
            if (texts.TryGetValue(rule.Text, out var first))
                throw DataLimits.Error(item.Line, $"{where}: the rule '{rule.Text}' is listed twice (first on line {first.ToString(CultureInfo.InvariantCulture)})");
            texts[rule.Text] = item.Line;
            rules.Add(rule);
        }
        if (rules.Count == 0)
            throw DataLimits.Error(entry.Line, $"Rules of {where} is empty: qubesd cannot set an empty list (and a qube without rules has all its traffic dropped); end with a catch-all such as 'action=drop'");
        return rules;
    }

    private static List<T> ReadItems<T>(DataEntry entry, string where, string what, Func<DataMap, string, T> read, Func<T, string> identity, Func<T, string> Sort)
    {
        var items = new List<T>();
        var seen = new Dictionary<string, int>(StringComparer.Ordinal);
        var n = 0;
        foreach (var node in List(entry.Value, $"{entry.Key} of {where}").Items)
        {
            n++;
            var itemWhere = $"{what} {n.ToString(CultureInfo.InvariantCulture)} of {where}";
            var map = Map(node, itemWhere);
            T item;
            try
            {
                item = read(map, itemWhere);
            }
            catch (QubesFirewallException ex) when (ex.ErrorId != ErrorIds.InvalidConfiguration)
            {
                throw DataLimits.Error(map.Line, $"{itemWhere}: {ex.Message}");
            }
            var id = identity(item);
            if (seen.TryGetValue(id, out var first))
                throw DataLimits.Error(map.Line, $"{itemWhere} is the same {what} as the one on line {first.ToString(CultureInfo.InvariantCulture)} ({id})");
            seen[id] = map.Line;
            items.Add(item);
        }
        return items.OrderBy(Sort, StringComparer.Ordinal).ToList();
    }

    private static PortForward ReadForward(string vmName, DataMap map, string where)
    {
        var keys = Keys(map, ForwardKeys, where);
        var protocol = EnumValue<ForwardProtocol>(Required(keys, "Protocol", map, where).Value, $"Protocol of {where}");
        var port = (int)Port(Required(keys, "Port", map, where), where);
        int? target = keys.TryGetValue("TargetPort", out var t) ? (int)Port(t, where) : null;
        var type = keys.TryGetValue("Type", out var ty) ? EnumValue<ForwardType>(ty.Value, $"Type of {where}") : ForwardType.External;
        var allowEntry = keys.TryGetValue("AllowFrom", out var a) ? a
            : throw DataLimits.Error(map.Line, $"{where} has no AllowFrom: list the sources allowed (CIDR), or write AllowFrom = '{AnySource}' to open it to every source");
        var allow = StringList(allowEntry, where);
        if (allow.Count == 0) throw DataLimits.Error(allowEntry.Line, $"AllowFrom of {where} is empty: list the sources, or write '{AnySource}'");
        if (allow.Contains(AnySource, StringComparer.OrdinalIgnoreCase))
        {
            if (allow.Count > 1) throw DataLimits.Error(allowEntry.Line, $"AllowFrom of {where} lists '{AnySource}' with other sources: '{AnySource}' stands alone");
            allow = [];
        }
        string? iface = keys.TryGetValue("Interface", out var i) ? String(i.Value, $"Interface of {where}") : null;
        long? expire = keys.TryGetValue("Expire", out var e) ? Integer(e.Value, $"Expire of {where}") : null;
        string? comment = keys.TryGetValue("Comment", out var c) ? String(c.Value, $"Comment of {where}") : null;
        if (iface is "") throw DataLimits.Error(i!.Line, $"Interface of {where} is empty: leave the key out instead");
        if (comment is "") throw DataLimits.Error(c!.Line, $"Comment of {where} is empty: leave the key out instead");
        var forward = PortForward.Create(vmName, protocol, port, target, type, allow, iface, expire is { } x ? PortForward.ValidateExpire(x) : null, comment);
        _ = forward.FeatureValue; // the feature qubesd would store must be valid too
        return forward;
    }

    private static InterVmLink ReadLink(string from, DataMap map, string where)
    {
        var keys = Keys(map, LinkKeys, where);
        var to = QubeName.Validate(String(Required(keys, "To", map, where).Value, $"To of {where}"));
        var protocol = EnumValue<ForwardProtocol>(Required(keys, "Protocol", map, where).Value, $"Protocol of {where}");
        var portEntry = Required(keys, "Port", map, where);
        var ports = portEntry.Value switch
        {
            DataInteger n => LinkPorts.FromArgument(n.Value),
            DataString s => LinkPorts.Parse(s.Value),
            var other => throw DataLimits.Error(portEntry.Line, $"Port of {where} is {other.Describe()}; use a port, 'N-M' or '{LinkPorts.AllText}'"),
        };
        var link = InterVmLink.Create(from, to, protocol, ports);
        QubeFeature.ValidateName(link.FeatureName);
        return link;
    }

    private static TcpBinding ReadBinding(string from, DataMap map, string where)
    {
        var keys = Keys(map, BindingKeys, where);
        var to = String(Required(keys, "To", map, where).Value, $"To of {where}");
        var port = Port(Required(keys, "Port", map, where), where);
        long? local = keys.TryGetValue("LocalPort", out var l) ? Port(l, where) : null;
        var permanent = keys.TryGetValue("Permanent", out var p) && Boolean(p.Value, $"Permanent of {where}");
        var binding = TcpBinding.Create(from, to, (int)port, local is { } x ? (int)x : null, permanent);
        _ = binding.FeatureValue;
        return binding;
    }

    // ------------------------------------------------------------------ typed access

    private static Dictionary<string, DataEntry> Keys(DataMap map, string[] known, string where)
    {
        var result = new Dictionary<string, DataEntry>(StringComparer.Ordinal);
        foreach (var entry in map.Entries)
        {
            var canonical = known.FirstOrDefault(k => string.Equals(k, entry.Key, StringComparison.OrdinalIgnoreCase))
                ?? throw DataLimits.Error(entry.Line, $"unknown key '{RuleGrammar.Printable(entry.Key)}' in {where} (known: {string.Join(", ", known)})");
            if (!result.TryAdd(canonical, entry)) throw DataLimits.Error(entry.Line, $"the key '{canonical}' is given twice in {where}");
        }
        return result;
    }

    private static DataEntry Required(Dictionary<string, DataEntry> keys, string key, DataMap map, string where) =>
        keys.TryGetValue(key, out var entry) ? entry : throw DataLimits.Error(map.Line, $"{where} has no {key}");

    private static DataMap Map(DataNode node, string what) =>
        node as DataMap ?? throw DataLimits.Error(node.Line, $"{what} is {node.Describe()}; a map (@{{ }} or a JSON object) is expected");

    private static DataList List(DataNode node, string what) =>
        node as DataList ?? throw DataLimits.Error(node.Line, $"{what} is {node.Describe()}; a list (@( ) or a JSON array) is expected");

    private static string String(DataNode node, string what) =>
        node is DataString s ? s.Value : throw DataLimits.Error(node.Line, $"{what} is {node.Describe()}; a string is expected");

    private static long Integer(DataNode node, string what) =>
        node is DataInteger n ? n.Value : throw DataLimits.Error(node.Line, $"{what} is {node.Describe()}; a number is expected");

    private static bool Boolean(DataNode node, string what) =>
        node is DataBoolean b ? b.Value : throw DataLimits.Error(node.Line, $"{what} is {node.Describe()}; $true or $false (JSON: true or false) is expected");

    private static long Port(DataEntry entry, string where)
    {
        var n = Integer(entry.Value, $"{entry.Key} of {where}");
        if (n is < 1 or > PortRange.MaxPort) throw DataLimits.Error(entry.Line, $"{entry.Key} of {where} is {n.ToString(CultureInfo.InvariantCulture)}; ports are 1-65535");
        return n;
    }

    /// <summary>A list of strings, or one string (AllowFrom = 'Any').</summary>
    private static List<string> StringList(DataEntry entry, string where) => entry.Value switch
    {
        DataString s => [s.Value],
        DataList l => l.Items.Select(i => String(i, $"an item of {entry.Key} of {where}")).ToList(),
        var other => throw DataLimits.Error(entry.Line, $"{entry.Key} of {where} is {other.Describe()}; a string or a list of strings is expected"),
    };

    private static T EnumValue<T>(DataNode node, string what) where T : struct, Enum
    {
        var text = String(node, what);
        foreach (var value in Enum.GetValues<T>())
            if (string.Equals(value.ToString(), text, StringComparison.OrdinalIgnoreCase)) return value;
        throw DataLimits.Error(node.Line, $"{what} is '{RuleGrammar.Printable(text)}'; use {string.Join(", ", Enum.GetNames<T>())}");
    }
}
