using System.Globalization;

namespace QubesFirewall.Tests.Shared;

/// <summary>
/// A test-side model of qrexec's policy (core-qrexec <c>qrexec/policy/parser.py</c>), written independently of the
/// engine so generated files are checked against qrexec's grammar and first-match semantics, not against the
/// generator's own idea of them: which files of the directory are read (names ending in ".policy", not starting
/// with "."), all-or-nothing refusal on a bad name, "C" order of names, the line grammar (service, argument,
/// source, target, action, key=value parameters) with qrexec's token rules per column, and evaluation of a call
/// (first matching line across files; allow to @default without target= refused; no match = deny).
/// </summary>
public static class QrexecPolicyModel
{
    public const string AllowedNameChars = "0123456789abcdefghijklmnopqrstuvwxyz_.-";

    /// <summary>Thrown where qrexec refuses every call (AccessDenied while loading) or rejects a line (PolicySyntaxError).</summary>
    public sealed class PolicyException(string message) : Exception(message);

    public sealed record Rule(string File, int Line, string? Service, string? Argument, string Source, string Target, string Action,
        IReadOnlyDictionary<string, string> Params);

    public sealed record Domain(string Type, IReadOnlyList<string> Tags, bool TemplateForDispVMs = false, string? DefaultDispVM = null);

    /// <summary>The outcome of a call: "allow" (with the qube it goes to), "ask", "deny", or "refused" (allow without a target).</summary>
    public sealed record Result(string Outcome, string? Target, Rule? Rule, string Reason);

    /// <summary>The file names qrexec reads from a directory listing, sorted; throws when one of them has a bad name.</summary>
    public static IReadOnlyList<string> ConsideredFiles(IEnumerable<string> names)
    {
        var list = names.Where(n => PathSuffix(n) == ".policy" && !n.StartsWith('.')).ToList();
        foreach (var n in list)
            if (!n.All(c => AllowedNameChars.Contains(c)))
                throw new PolicyException("invalid filename: " + n);
        list.Sort(StringComparer.Ordinal);
        return list;
    }

    // pathlib's suffix: from the last dot of the name, unless that dot is the first character.
    private static string PathSuffix(string name)
    {
        var dot = name.LastIndexOf('.');
        return dot <= 0 || dot == name.Length - 1 ? "" : name[dot..];
    }

    /// <summary>Every rule of the files (name, content) qrexec would load, in evaluation order.</summary>
    public static IReadOnlyList<Rule> Load(IEnumerable<(string Name, string Content)> files)
    {
        var map = files.ToDictionary(f => f.Name, f => f.Content, StringComparer.Ordinal);
        var rules = new List<Rule>();
        foreach (var name in ConsideredFiles(map.Keys))
            rules.AddRange(ParseFile(name, map[name]));
        return rules;
    }

    public static IReadOnlyList<Rule> ParseFile(string file, string content)
    {
        var rules = new List<Rule>();
        var n = 0;
        foreach (var raw in content.Split('\n'))
        {
            n++;
            var line = raw.Trim();
            if (line.Length == 0 || line[0] == '#') continue;
            if (line == "!compat-4.0") continue; // reads /etc/qubes-rpc/policy: empty in these tests
            if (line[0] == '!') throw new PolicyException($"{file}:{n}: directives are not modelled here: {line}");
            var words = line.Split([' ', '\t', '\r', '\v', '\f'], StringSplitOptions.RemoveEmptyEntries);
            if (words.Length < 5) throw new PolicyException($"{file}:{n}: wrong number of fields");
            rules.Add(ParseRule(file, n, words[0], words[1], words[2], words[3], words[4], words[5..]));
        }
        return rules;
    }

    private static Rule ParseRule(string file, int line, string service, string argument, string source, string target, string action, string[] parameters)
    {
        string Where() => $"{file}:{line.ToString(CultureInfo.InvariantCulture)}";
        const string rpc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+-._";
        string? svc = service == "*" ? null : service;
        if (svc is not null && svc.Any(c => !rpc.Contains(c) || c == '+')) throw new PolicyException($"{Where()}: service {service} contains invalid characters");
        string? arg = argument == "*" ? null : argument;
        if (arg is not null)
        {
            if (arg.Any(c => !rpc.Contains(c))) throw new PolicyException($"{Where()}: argument {argument} contains invalid characters");
            if (!arg.StartsWith('+')) throw new PolicyException($"{Where()}: argument {argument} does not start with +");
            if (svc is null) throw new PolicyException($"{Where()}: only * argument allowed for * service");
        }
        CheckToken(source, TokenColumn.Source, Where());
        CheckToken(target, TokenColumn.Target, Where());
        var allowed = action switch
        {
            "allow" => new[] { "target", "user", "notify", "autostart" },
            "deny" => ["notify"],
            "ask" => ["target", "default_target", "user", "notify", "autostart"],
            _ => throw new PolicyException($"{Where()}: invalid action: {action}"),
        };
        var map = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var p in parameters)
        {
            var eq = p.IndexOf('=');
            if (eq < 0) throw new PolicyException($"{Where()}: invalid action parameter syntax: {p}");
            var key = p[..eq];
            if (!map.TryAdd(key, p[(eq + 1)..])) throw new PolicyException($"{Where()}: parameter given twice: {key}");
            if (!allowed.Contains(key)) throw new PolicyException($"{Where()}: invalid parameters for action {action}: {p}");
            if (key is "notify" or "autostart" && map[key] is not ("yes" or "no")) throw new PolicyException($"{Where()}: {key} can be only yes or no");
            if (key is "target" or "default_target") CheckToken(map[key], TokenColumn.Redirect, Where());
        }
        if (target == "@default" && action == "allow" && !map.ContainsKey("target"))
            throw new PolicyException($"{Where()}: allow action for @default rule must specify target= option");
        return new Rule(file, line, svc, arg, source, target, action, map);
    }

    private enum TokenColumn { Source, Target, Redirect }

    // Which @tokens qrexec accepts in which column (the class hierarchy of parser.py's VMToken subclasses).
    private static void CheckToken(string token, TokenColumn column, string where)
    {
        if (token.Length == 0) throw new PolicyException($"{where}: empty token");
        if (!token.StartsWith('@') && token != "*") return;
        var ok = column switch
        {
            TokenColumn.Source => token is "*" or "@adminvm" or "@anyvm" || HasValue(token, "@type:") || HasValue(token, "@tag:") || HasValue(token, "@dispvm:"),
            TokenColumn.Target => token is "*" or "@adminvm" or "@anyvm" or "@default" or "@dispvm" || HasValue(token, "@type:") || HasValue(token, "@tag:") || HasValue(token, "@dispvm:"),
            _ => token is "@adminvm" or "@dispvm" || (HasValue(token, "@dispvm:") && !token.StartsWith("@dispvm:@", StringComparison.Ordinal)),
        };
        if (!ok) throw new PolicyException($"{where}: invalid {column.ToString().ToLowerInvariant()} token: {token}");
    }

    private static bool HasValue(string token, string prefix) =>
        token.StartsWith(prefix, StringComparison.Ordinal) && token.Length > prefix.Length &&
        (token[prefix.Length] != '@' || (prefix == "@dispvm:" && token.StartsWith("@dispvm:@tag:", StringComparison.Ordinal) && token.Length > 13));

    private static bool IsDom0(string t) => t is "@adminvm" or "dom0";

    private static bool MatchSource(string token, string source, IReadOnlyDictionary<string, Domain> domains) => token switch
    {
        "*" => true,
        "@adminvm" => IsDom0(source),
        "@anyvm" => !IsDom0(source),
        _ when token.StartsWith("@type:", StringComparison.Ordinal) => domains.TryGetValue(source, out var d) && d.Type == token[6..],
        _ when token.StartsWith("@tag:", StringComparison.Ordinal) => domains.TryGetValue(source, out var d) && d.Tags.Contains(token[5..]),
        _ when token.StartsWith("@dispvm:", StringComparison.Ordinal) => false, // a source is a qube name, never a @dispvm token
        _ => IsDom0(token) ? IsDom0(source) : token == source,
    };

    private static bool MatchTarget(string token, string target, string source, IReadOnlyDictionary<string, Domain> domains) => token switch
    {
        "*" => true,
        "@adminvm" => IsDom0(target),
        "@anyvm" => !IsDom0(target),
        "@default" or "@dispvm" => token == target,
        _ when token.StartsWith("@type:", StringComparison.Ordinal) => domains.TryGetValue(target, out var d) && d.Type == token[6..],
        _ when token.StartsWith("@tag:", StringComparison.Ordinal) => domains.TryGetValue(target, out var d) && d.Tags.Contains(token[5..]),
        _ when token.StartsWith("@dispvm:@tag:", StringComparison.Ordinal) =>
            DispVmTemplateOf(target, source, domains) is { } t && domains.TryGetValue(t, out var d) && d.TemplateForDispVMs && d.Tags.Contains(token[13..]),
        _ when token.StartsWith("@dispvm:", StringComparison.Ordinal) => DispVmTemplateOf(target, source, domains) == token[8..],
        _ => IsDom0(token) ? IsDom0(target) : token == target,
    };

    private static string? DispVmTemplateOf(string target, string source, IReadOnlyDictionary<string, Domain> domains) =>
        target == "@dispvm" ? (domains.TryGetValue(source, out var s) ? s.DefaultDispVM : null)
        : target.StartsWith("@dispvm:", StringComparison.Ordinal) ? target[8..] : null;

    /// <summary>
    /// Evaluates the call <c>qrexec-client-vm TARGET SERVICE+ARGUMENT</c> made by <paramref name="source"/>: the first
    /// rule matching service, argument, source and intended target decides.
    /// </summary>
    public static Result Evaluate(IReadOnlyList<Rule> rules, string service, string argument, string source, string intendedTarget,
        IReadOnlyDictionary<string, Domain> domains)
    {
        if (intendedTarget is "" or "$default") intendedTarget = "@default";
        var rule = rules.FirstOrDefault(r =>
            (r.Service is null || r.Service == service) && (r.Argument is null || r.Argument == argument) &&
            MatchSource(r.Source, source, domains) && MatchTarget(r.Target, intendedTarget, source, domains));
        if (rule is null) return new Result("deny", null, null, "no matching rule found");
        switch (rule.Action)
        {
            case "deny":
                return new Result("deny", null, rule, $"denied by {rule.File}:{rule.Line}");
            case "ask":
                return new Result("ask", rule.Params.GetValueOrDefault("default_target"), rule, $"ask by {rule.File}:{rule.Line}");
            default:
                var target = rule.Params.GetValueOrDefault("target") ?? intendedTarget;
                if (target == "@default") return new Result("refused", null, rule, $"allow at {rule.File}:{rule.Line} but no target");
                return new Result("allow", target == "@adminvm" ? "dom0" : target, rule, $"allowed by {rule.File}:{rule.Line}");
        }
    }
}

/// <summary>A small INI reader for systemd unit files: sections, key=value lines, # and ; comments, order and duplicates kept.</summary>
public static class UnitFile
{
    public sealed record Entry(string Section, string Key, string Value);

    public static IReadOnlyList<Entry> Parse(string text)
    {
        var entries = new List<Entry>();
        string? section = null;
        var n = 0;
        foreach (var raw in text.Split('\n'))
        {
            n++;
            var line = raw.Trim();
            if (line.Length == 0 || line[0] is '#' or ';') continue;
            if (line[0] == '[')
            {
                if (!line.EndsWith(']') || line.Length < 3) throw new FormatException($"line {n}: bad section header '{line}'");
                section = line[1..^1];
                continue;
            }
            if (line.EndsWith('\\')) throw new FormatException($"line {n}: continuation lines are not expected in generated units");
            var eq = line.IndexOf('=');
            if (eq <= 0) throw new FormatException($"line {n}: not a key=value line: '{line}'");
            if (section is null) throw new FormatException($"line {n}: key outside any section");
            entries.Add(new Entry(section, line[..eq].Trim(), line[(eq + 1)..].Trim()));
        }
        return entries;
    }

    /// <summary>The single value of a key in a section (throws when absent or given more than once).</summary>
    public static string Single(IReadOnlyList<Entry> entries, string section, string key) =>
        entries.Where(e => e.Section == section && e.Key == key).Select(e => e.Value).Single();
}
