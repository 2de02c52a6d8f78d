using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using QubesFirewall.Engine.Formats;
using QubesFirewall.Engine.Model;

namespace QubesFirewall.Engine.AdminApi;

/// <summary>One property as qubesd serializes it (core-admin <c>QubesAdminAPI._serialize_property</c>).</summary>
public sealed record QubesdProperty(string Name, bool IsDefault, string Type, string Value);

/// <summary>One line of <c>admin.vm.List</c>: <c>name class=AppVM state=Running [uuid=...]</c>.</summary>
public sealed record QubesdVmListEntry(string Name, string ClassName, string State, IReadOnlyDictionary<string, string> Extra);

/// <summary>
/// Strict parsers for qubesd's replies: anything that does not match the documented shape is a
/// <c>QubesdBadReply</c> (or <c>QubesdReplyTruncated</c> when the reply stops mid-line), never guessed.
/// Shapes are those of core-admin <c>qubes/api/admin.py</c>.
/// </summary>
public static partial class AdminApiReplies
{
    // "default=True type=vm sys-firewall"; the value is the rest of the line (may be empty or hold spaces).
    [GeneratedRegex(@"\Adefault=(True|False) type=(vm|int|bool|label|str) (.*)\z", RegexOptions.CultureInvariant | RegexOptions.Singleline)]
    private static partial Regex PropertyValuePattern();

    [GeneratedRegex(@"\A[a-zA-Z_][a-zA-Z0-9_]*\z", RegexOptions.CultureInvariant)]
    private static partial Regex PropertyNamePattern();

    [GeneratedRegex(@"\A[A-Za-z0-9_.-]+\z", RegexOptions.CultureInvariant)]
    private static partial Regex WordPattern();

    /// <summary>The lines of a line-oriented reply; every line ends with a newline (a reply that does not was cut short).</summary>
    public static IReadOnlyList<string> Lines(string content, string what)
    {
        if (content.Length == 0) return [];
        if (content[^1] != '\n') throw QubesdClient.Truncated(what, "its last line has no newline");
        return content[..^1].Split('\n');
    }

    /// <summary><c>admin.vm.property.Get</c>: <c>default=False type=vm sys-firewall</c>.</summary>
    public static QubesdProperty ParseProperty(string name, string content, string what)
    {
        var m = PropertyValuePattern().Match(content);
        if (!m.Success)
            throw Bad(what, $"'{RuleGrammar.Printable(content)}' is not 'default=True|False type=TYPE VALUE'");
        return new QubesdProperty(name, m.Groups[1].Value == "True", m.Groups[2].Value, m.Groups[3].Value);
    }

    /// <summary>
    /// <c>admin.vm.property.GetAll</c> / <c>admin.property.GetAll</c>: one <c>name default=.. type=.. value</c>
    /// line per property, with backslash and newline escaped as <c>\\</c> and <c>\n</c>.
    /// </summary>
    public static IReadOnlyDictionary<string, QubesdProperty> ParseGetAll(string content, string what)
    {
        var map = new Dictionary<string, QubesdProperty>(StringComparer.Ordinal);
        foreach (var line in Lines(content, what))
        {
            var space = line.IndexOf(' ');
            if (space <= 0) throw Bad(what, $"the line '{RuleGrammar.Printable(line)}' has no property name");
            var name = line[..space];
            if (!PropertyNamePattern().IsMatch(name)) throw Bad(what, $"'{RuleGrammar.Printable(name)}' is not a property name");
            var property = ParseProperty(name, line[(space + 1)..], what);
            if (!map.TryAdd(name, property with { Value = Unescape(property.Value, what) }))
                throw Bad(what, $"the property '{name}' is listed twice");
        }
        return map;
    }

    private static string Unescape(string value, string what)
    {
        if (!value.Contains('\\')) return value;
        var sb = new StringBuilder(value.Length);
        for (var i = 0; i < value.Length; i++)
        {
            if (value[i] != '\\') { sb.Append(value[i]); continue; }
            if (i + 1 >= value.Length) throw Bad(what, "a property value ends with a lone backslash");
            sb.Append(value[++i] switch
            {
                '\\' => '\\',
                'n' => '\n',
                var other => throw Bad(what, $"unknown escape '\\{other}' in a property value"),
            });
        }
        return sb.ToString();
    }

    /// <summary><c>admin.vm.List</c>: <c>name class=X state=Y</c> (R4.3 and later add <c>uuid=...</c>; other words are kept).</summary>
    public static IReadOnlyList<QubesdVmListEntry> ParseVmList(string content, string what)
    {
        var entries = new List<QubesdVmListEntry>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var line in Lines(content, what))
        {
            var words = line.Split(' ');
            var name = words[0];
            if (Validation.QubeName.Problem(name) is not null && name != "dom0")
                throw Bad(what, $"'{RuleGrammar.Printable(name)}' is not a qube name");
            var fields = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var word in words.Skip(1))
            {
                var eq = word.IndexOf('=');
                if (eq <= 0 || !WordPattern().IsMatch(word[..eq]) || !fields.TryAdd(word[..eq], word[(eq + 1)..]))
                    throw Bad(what, $"'{RuleGrammar.Printable(line)}' is not 'name class=CLASS state=STATE'");
            }
            if (!fields.Remove("class", out var cls) || !WordPattern().IsMatch(cls) || !fields.Remove("state", out var state) || !WordPattern().IsMatch(state))
                throw Bad(what, $"'{RuleGrammar.Printable(line)}' lacks class= or state=");
            if (!seen.Add(name)) throw Bad(what, $"the qube '{name}' is listed twice");
            entries.Add(new QubesdVmListEntry(name, cls, state, fields));
        }
        return entries;
    }

    /// <summary>A list of names, one per line (<c>admin.vm.feature.List</c>, <c>admin.vm.tag.List</c>, <c>admin.label.List</c>, <c>admin.vm.property.List</c>).</summary>
    public static IReadOnlyList<string> ParseNames(string content, string what)
    {
        var names = Lines(content, what);
        foreach (var n in names)
            if (!WordPattern().IsMatch(n)) throw Bad(what, $"'{RuleGrammar.Printable(n)}' is not a name");
        return names;
    }

    public static PowerState ParsePowerState(string state) => state switch
    {
        "Halted" => PowerState.Halted,
        "Running" => PowerState.Running,
        "Paused" => PowerState.Paused,
        "Transient" => PowerState.Transient,
        "Suspended" => PowerState.Suspended,
        "Halting" => PowerState.Halting,
        "Dying" => PowerState.Dying,
        "Crashed" => PowerState.Crashed,
        _ => PowerState.Unknown, // "NA": libvirt does not know the domain
    };

    private static readonly string[] HostKeys = ["dsthost", "dst4", "dst6", "dstname"];
    private static readonly HashSet<string> RuleKeys = new(StringComparer.Ordinal) { "action", "proto", "specialtarget", "dstports", "icmptype", "expire" };

    /// <summary>
    /// <c>admin.vm.firewall.Get</c>: one rule per line in qubesd's own text form (its <c>Rule.api_rule</c>:
    /// single spaces, <c>comment=</c> last). The shape is checked strictly; the values are read the way
    /// firewall.xml is read, so a rule an older qubesd accepted still shows (with its problems listed)
    /// instead of making the whole list unreadable.
    /// </summary>
    public static FirewallDocument ParseFirewall(string content, string what)
    {
        var rules = new List<FirewallRule>();
        var lines = Lines(content, what);
        for (var i = 0; i < lines.Count; i++)
        {
            var line = lines[i];
            var properties = new List<KeyValuePair<string, string>>();
            var options = line;
            var commentAt = line.IndexOf("comment=", StringComparison.Ordinal);
            if (commentAt >= 0)
            {
                if (commentAt > 0 && line[commentAt - 1] != ' ') throw Bad(what, $"rule {i}: 'comment=' inside another word");
                options = commentAt == 0 ? "" : line[..(commentAt - 1)];
            }
            if (options.Length == 0) throw Bad(what, $"rule {i} ('{RuleGrammar.Printable(line)}') has no action");
            foreach (var word in options.Split(' '))
            {
                var eq = word.IndexOf('=');
                if (eq <= 0) throw Bad(what, $"rule {i}: '{RuleGrammar.Printable(word)}' is not key=value");
                var key = word[..eq];
                if (HostKeys.Contains(key)) key = "dsthost";
                else if (!RuleKeys.Contains(key)) throw Bad(what, $"rule {i}: unknown option '{RuleGrammar.Printable(key)}'");
                properties.Add(new(key, word[(eq + 1)..]));
            }
            if (commentAt >= 0) properties.Add(new("comment", line[(commentAt + "comment=".Length)..]));
            try
            {
                rules.Add(FirewallXml.FromProperties(properties, what, "rule", i));
            }
            catch (QubesFirewallException ex)
            {
                throw Bad(what, ex.Message);
            }
        }
        return new FirewallDocument(rules, 2, FileExists: true);
    }

    /// <summary>The payload of <c>admin.vm.firewall.Set</c>: each rule's text and a newline, ASCII.</summary>
    public static byte[] FirewallPayload(IEnumerable<FirewallRule> rules) =>
        Encoding.ASCII.GetBytes(string.Concat(rules.Select(r => r.Text + "\n")));

    internal static int ParseInt(QubesdProperty p, string what) =>
        int.TryParse(p.Value, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var v)
            ? v
            : throw Bad(what, $"the {p.Type} property '{p.Name}' has the value '{RuleGrammar.Printable(p.Value)}'");

    internal static bool ParseBool(QubesdProperty p, string what) => p.Value switch
    {
        "True" => true,
        "False" => false,
        _ => throw Bad(what, $"the bool property '{p.Name}' has the value '{RuleGrammar.Printable(p.Value)}'"),
    };

    internal static QubesFirewallException Bad(string what, string detail) =>
        new(ErrorIds.QubesdBadReply, FailureKind.ProtocolError, $"qubesd's reply to {what} is not in the expected form: {detail}.", what);
}
