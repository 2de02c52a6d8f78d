using System.Globalization;
using System.Text;
using QubesFirewall.Engine.Model;

namespace QubesFirewall.Engine.Formats;

/// <summary>
/// The dom0 qrexec policy file the module owns, <c>/etc/qubes/policy.d/70-qubesfirewall.policy</c>, and what
/// the module needs to know of qrexec's policy (core-qrexec <c>qrexec/policy/parser.py</c>, R4.1 and later):
/// <list type="bullet">
/// <item>qrexec reads every file of <c>/etc/qubes/policy.d</c> whose name ends in <c>.policy</c> and does not
/// start with a dot, in "C" lexical order of the names, and takes the first line that matches a request,
/// across files. A considered file whose name has a character outside <c>[0-9a-z_.-]</c>, or a line it cannot
/// parse, makes it refuse every request (all or nothing). It reloads on any change of the directory
/// (inotify), so the file is written through a temporary name that qrexec ignores (a leading dot, no
/// <c>.policy</c> ending; see <see cref="Io.AtomicFile"/>) and renamed into place.</item>
/// <item>A line is <c>service +argument source target action [key=value ...]</c>, whitespace separated;
/// <c>#</c> starts a comment line; <c>!</c> starts a directive (<c>!include</c>, <c>!include-dir</c>,
/// <c>!include-service</c>, <c>!compat-4.0</c>). <c>allow</c> to <c>@default</c> needs <c>target=</c>.</item>
/// </list>
/// <para>Why 70: the module's lines must come before <c>90-default.policy</c>, whose
/// <c>qubes.ConnectTCP * @anyvm @anyvm deny</c> would otherwise match first (<c>@anyvm</c> as a target also
/// matches <c>@default</c>), and after the files where the user and the system put their own decisions:
/// <c>30-user.policy</c> (the place the Qubes documentation gives for one's own rules), <c>35-compat.policy</c>
/// (R4.0-style files in /etc/qubes-rpc/policy) and the Global Config tool's <c>50-config-*.policy</c>, so an
/// explicit deny there still wins over a binding, and Add-QubeTcpBinding warns that it does. 70 is what
/// qrexec's multi-file policy design reserves for packaged explicit allow rules (60 deny, 70 allow, 80 generic).</para>
/// <para>The module's lines are narrow (one service, one argument, one source, the <c>@default</c> target): a
/// request of another source, port or target matches none of them and goes on to the next files exactly as
/// before, so no deny line is added (one would turn other sources' "ask" into "deny").</para>
/// </summary>
public static class QrexecPolicy
{
    public const string Directory = "/etc/qubes/policy.d";
    public const string FileName = "70-qubesfirewall.policy";
    public const string FilePath = Directory + "/" + FileName;

    /// <summary>Where R4.0-style policy files are, read by the <c>!compat-4.0</c> directive of 35-compat.policy.</summary>
    public const string LegacyDirectory = "/etc/qubes-rpc/policy";

    public const string Suffix = ".policy";

    /// <summary>Mode of the file: as Qubes installs its own policy files (0664; the directory is root:qubes 0775).</summary>
    public const UnixFileMode FileMode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.OtherRead;

    /// <summary>Whether qrexec reads a file of the policy directory: a name ending in <c>.policy</c> and not starting with a dot.</summary>
    public static bool IsConsidered(string fileName) =>
        !fileName.StartsWith('.') && fileName.Length > Suffix.Length && fileName.EndsWith(Suffix, StringComparison.Ordinal);

    /// <summary>Whether a considered file's name is one qrexec accepts (<c>[0-9a-z_.-]</c> only); any other makes it refuse every request.</summary>
    public static bool HasValidName(string fileName) => fileName.Length > 0 && fileName.All(c => c is (>= '0' and <= '9') or (>= 'a' and <= 'z') or '_' or '.' or '-');

    /// <summary>
    /// The whole file for a set of bindings (null when there is none: the file is then removed). Lines sorted by
    /// port, then client, then target: each (client, port) has one target (the planner refuses a second one), so
    /// no line can shadow another and the order only makes the file stable.
    /// </summary>
    public static string? Render(IEnumerable<TcpBinding> bindings)
    {
        var list = bindings
            .OrderBy(b => b.Port).ThenBy(b => b.From, StringComparer.Ordinal).ThenBy(b => b.To, StringComparer.Ordinal)
            .ToList();
        if (list.Count == 0) return null;
        var sb = new StringBuilder(512 + list.Count * 80);
        sb.Append("## qubes.ConnectTCP bindings of QubesFirewall (Add-QubeTcpBinding, Remove-QubeTcpBinding).\n");
        sb.Append("## Generated in dom0 from the qubesfirewall.tcp.* features of the client qubes: do not edit;\n");
        sb.Append("## the next change of a binding rewrites this file whole. Put your own rules in 30-user.policy:\n");
        sb.Append("## it comes first, so a deny there still wins over the lines below.\n");
        sb.Append("## Each line lets one client reach one TCP port of one qube (qrexec-client-vm @default\n");
        sb.Append("## qubes.ConnectTCP+PORT); nothing here denies: every other request goes on to the next files\n");
        sb.Append("## (90-default.policy denies qubes.ConnectTCP).\n");
        foreach (var b in list) sb.Append(b.PolicyLine).Append('\n');
        return sb.ToString();
    }

    // ------------------------------------------------------------------ reading policy (for the checks of a plan)

    /// <summary>One non-comment line of a policy file: a rule or a directive.</summary>
    public sealed record Entry(string File, int Line, string Text, string? Service, string? Argument, string Source, string Target, string Action,
        IReadOnlyDictionary<string, string> Parameters, string? Directive)
    {
        public bool IsDirective => Directive is not null;

        public string Location => Line > 0 ? $"{File}:{Line.ToString(CultureInfo.InvariantCulture)}" : File;
    }

    /// <summary>
    /// Parses policy text the way qrexec does (new format, or with <paramref name="legacyService"/> the R4.0 format
    /// of one file in /etc/qubes-rpc/policy: <c>source target action[,param=value...]</c>, <c>$</c> for <c>@</c>).
    /// Throws InvalidPolicyFile on a line qrexec would refuse.
    /// </summary>
    public static IReadOnlyList<Entry> Parse(string content, string file, (string Service, string? Argument)? legacyService = null)
    {
        var entries = new List<Entry>();
        var lineNo = 0;
        foreach (var raw in content.Split('\n'))
        {
            lineNo++;
            var line = raw.Trim();
            if (line.Length == 0 || line[0] == '#') continue;
            if (legacyService is { } legacy)
            {
                line = line.Replace("$include:", "!include ", StringComparison.Ordinal).Replace('$', '@').Replace(',', ' ');
                if (line.StartsWith('!')) { entries.Add(DirectiveEntry(file, lineNo, line)); continue; }
                var w = line.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
                if (w.Length < 3) throw Syntax(file, lineNo, "wrong number of fields");
                entries.Add(RuleEntry(file, lineNo, line, legacy.Service, legacy.Argument ?? "*", w[0], w[1], w[2], w[3..]));
                continue;
            }
            if (line[0] == '!') { entries.Add(DirectiveEntry(file, lineNo, line)); continue; }
            var words = line.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
            if (words.Length < 5) throw Syntax(file, lineNo, "wrong number of fields");
            entries.Add(RuleEntry(file, lineNo, line, words[0], words[1], words[2], words[3], words[4], words[5..]));
        }
        return entries;
    }

    private static Entry DirectiveEntry(string file, int line, string text)
    {
        var words = text.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
        if (words[0] is not ("!include" or "!include-dir" or "!include-service" or "!compat-4.0"))
            throw Syntax(file, line, $"invalid directive {words[0]}");
        return new Entry(file, line, text, null, null, "", "", "", new Dictionary<string, string>(), words[0]);
    }

    private static Entry RuleEntry(string file, int line, string text, string service, string argument, string source, string target, string action, string[] parameters)
    {
        string? svc = service == "*" ? null : service;
        string? arg = argument == "*" ? null : argument;
        if (svc is not null && (svc.Length == 0 || !svc.All(IsRpcChar) || svc.Contains('+')))
            throw Syntax(file, line, $"invalid service '{RuleGrammar.Printable(service)}'");
        if (arg is not null && (!arg.StartsWith('+') || !arg.All(IsRpcChar)))
            throw Syntax(file, line, $"invalid argument '{RuleGrammar.Printable(argument)}' (it starts with + or is *)");
        if (svc is null && arg is not null) throw Syntax(file, line, "only * argument allowed for * service");
        if (action is not ("allow" or "deny" or "ask")) throw Syntax(file, line, $"invalid action '{RuleGrammar.Printable(action)}'");
        var map = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var p in parameters)
        {
            var eq = p.IndexOf('=');
            if (eq < 0) throw Syntax(file, line, $"invalid action parameter '{RuleGrammar.Printable(p)}'");
            if (!map.TryAdd(p[..eq], p[(eq + 1)..])) throw Syntax(file, line, $"parameter given twice: {p[..eq]}");
        }
        if (target == "@default" && action == "allow" && !map.ContainsKey("target"))
            throw Syntax(file, line, "allow action for @default rule must specify target= option");
        return new Entry(file, line, text, svc, arg, source, target, action, map, null);
    }

    private static bool IsRpcChar(char c) => char.IsAsciiLetterOrDigit(c) || c is '+' or '-' or '.' or '_';

    private static QubesFirewallException Syntax(string file, int line, string why) =>
        new(ErrorIds.InvalidPolicyFile, FailureKind.InvalidData, $"{file}:{line.ToString(CultureInfo.InvariantCulture)}: {why}", file);

    /// <summary>
    /// Whether a rule matches the call <c>qrexec-client-vm @default SERVICE+ARGUMENT</c> from <paramref name="source"/>
    /// (qrexec's token semantics: <c>*</c> and <c>@anyvm</c> match any qube that is not dom0; <c>@tag:</c>, <c>@type:</c>
    /// by the qube's tags and class; <c>@dispvm:</c> tokens never match a source given by name). The target of the
    /// call is <c>@default</c>, which the target columns <c>*</c>, <c>@anyvm</c> and <c>@default</c> match.
    /// </summary>
    public static bool Matches(Entry rule, string service, string argument, Qube source)
    {
        if (rule.IsDirective) return false;
        if (rule.Service is not null && rule.Service != service) return false;
        if (rule.Argument is not null && rule.Argument != argument) return false;
        var sourceMatches = rule.Source switch
        {
            "*" or "@anyvm" => true,
            "@adminvm" => false,
            var s when s.StartsWith("@tag:", StringComparison.Ordinal) => source.Tags.Contains(s[5..]),
            var s when s.StartsWith("@type:", StringComparison.Ordinal) => source.ClassName == s[6..],
            var s when s.StartsWith("uuid:", StringComparison.Ordinal) => source.Properties.TryGetValue("uuid", out var u) && u == s[5..],
            var s when s.StartsWith('@') => false,
            var s => s == source.Name,
        };
        return sourceMatches && rule.Target is "*" or "@anyvm" or "@default";
    }

    /// <summary>What a policy decides for a call, and the line that decides it.</summary>
    public sealed record Decision(Entry? Rule, string? Problem)
    {
        /// <summary>The action of the deciding line; "deny" when nothing matches (qrexec's "no matching rule found").</summary>
        public string Action => Rule?.Action ?? "deny";

        public string? RedirectTarget => Rule is { } r && r.Parameters.TryGetValue("target", out var t) ? t : null;
    }

    /// <summary>
    /// The first line matching the call, across <paramref name="files"/> (name, content) read in "C" lexical order of
    /// the names, the way qrexec evaluates. A bad file name or a line qrexec cannot parse decides by itself
    /// (qrexec refuses everything): <see cref="Decision.Problem"/> says so. <c>!compat-4.0</c> is followed through
    /// <paramref name="legacyFile"/> (a file of /etc/qubes-rpc/policy by name, or null): the file for the
    /// service and argument with its implicit deny, then the file for the service alone. Other directives are
    /// not followed (the check is advisory).
    /// </summary>
    public static Decision Evaluate(IEnumerable<(string Name, string Content)> files, string service, string argument, Qube source,
        Func<string, string?>? legacyFile = null)
    {
        var ordered = files.Where(f => IsConsidered(f.Name)).OrderBy(f => f.Name, StringComparer.Ordinal).ToList();
        var bad = ordered.FirstOrDefault(f => !HasValidName(f.Name));
        if (bad.Name is not null)
            return new Decision(null, $"the policy directory has a file named '{RuleGrammar.Printable(bad.Name)}', a name qrexec does not accept (only 0-9, a-z, '_', '.' and '-'): it refuses every call until the file is renamed or removed");
        var rules = new List<Entry>();
        foreach (var (name, content) in ordered)
        {
            IReadOnlyList<Entry> entries;
            try
            {
                entries = Parse(content, name);
            }
            catch (QubesFirewallException ex)
            {
                return new Decision(null, $"qrexec cannot parse {ex.Message}, so it refuses every call until that line is fixed");
            }
            foreach (var e in entries)
            {
                if (e.Directive == "!compat-4.0" && legacyFile is not null)
                {
                    var specific = service + argument;
                    if (legacyFile(specific) is { } s)
                    {
                        try
                        {
                            rules.AddRange(Parse(s, LegacyDirectory + "/" + specific, (service, argument)));
                        }
                        catch (QubesFirewallException ex)
                        {
                            return new Decision(null, $"qrexec cannot parse {ex.Message}, so it refuses every call until that line is fixed");
                        }
                        rules.Add(new Entry(LegacyDirectory + "/" + specific, 0, "@anyvm @anyvm deny (implicit after an R4.0 policy file)", service, argument, "@anyvm", "@anyvm", "deny",
                            new Dictionary<string, string>(), null));
                    }
                    if (legacyFile(service) is { } g)
                    {
                        try
                        {
                            rules.AddRange(Parse(g, LegacyDirectory + "/" + service, (service, null)));
                        }
                        catch (QubesFirewallException ex)
                        {
                            return new Decision(null, $"qrexec cannot parse {ex.Message}, so it refuses every call until that line is fixed");
                        }
                    }
                    continue;
                }
                if (!e.IsDirective) rules.Add(e);
            }
        }
        return new Decision(rules.FirstOrDefault(r => Matches(r, service, argument, source)), null);
    }
}
