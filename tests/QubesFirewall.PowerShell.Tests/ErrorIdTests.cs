using System.Management.Automation;
using System.Reflection;
using System.Text.RegularExpressions;
using QubesFirewall.Engine;

namespace QubesFirewall.PowerShell.Tests;

/// <summary>
/// The error-id table (<see cref="ErrorIds"/>) against the source and the docs: every id is written out once in
/// the table, never built at run time, listed with its meaning on the module page, and named on the page of each
/// cmdlet that raises it itself; every id-like word the docs name is a real id or a name the code has.
/// </summary>
public sealed partial class ErrorIdTests
{
    private static string SourceRoot => Path.Combine(Repo.Root, "src");
    private static string DocsDirectory => Path.Combine(Repo.Root, "docs", "cmdlets");
    private static string ModulePage => Path.Combine(DocsDirectory, "QubesFirewall.md");
    private static string TablePath => Path.Combine(SourceRoot, "QubesFirewall.Engine", "ErrorIds.cs");

    private static readonly Lazy<IReadOnlyList<string>> Table = new(() =>
        typeof(ErrorIds).GetFields(BindingFlags.Public | BindingFlags.Static)
            .Where(f => f is { IsLiteral: true } && f.FieldType == typeof(string))
            .Select(f => (string)f.GetRawConstantValue()!).ToList());

    private static IEnumerable<(string File, string Text)> SourceFiles() =>
        Directory.EnumerateFiles(SourceRoot, "*.cs", SearchOption.AllDirectories)
            .Where(f => !f.Split(Path.DirectorySeparatorChar).Any(p => p is "bin" or "obj"))
            .OrderBy(f => f, StringComparer.Ordinal)
            .Select(f => (Path.GetRelativePath(Repo.Root, f), File.ReadAllText(f)));

    [Fact]
    public void Every_id_is_its_own_name_once_in_PascalCase()
    {
        var fields = typeof(ErrorIds).GetFields(BindingFlags.Public | BindingFlags.Static).Where(f => f.IsLiteral).ToList();
        Assert.True(fields.Count > 100, $"the table has {fields.Count} ids");
        var problems = fields.Where(f => (string)f.GetRawConstantValue()! != f.Name).Select(f => $"{f.Name} = '{f.GetRawConstantValue()}'")
            .Concat(Table.Value.Where(id => !PascalCase().IsMatch(id)).Select(id => $"'{id}' is not PascalCase"))
            .Concat(Table.Value.GroupBy(id => id).Where(g => g.Count() > 1).Select(g => $"'{g.Key}' twice"))
            .ToList();
        Assert.True(problems.Count == 0, string.Join(Environment.NewLine, problems));
        // Each entry carries its one-line meaning.
        var text = File.ReadAllText(TablePath);
        var undocumented = Table.Value.Where(id => !Regex.IsMatch(text, $@"/// <summary>[^\n]+</summary>\s*\n\s*public const string {id} = nameof\({id}\);")).ToList();
        Assert.True(undocumented.Count == 0, "ids without a one-line <summary>: " + string.Join(", ", undocumented));
    }

    [Fact]
    public void The_module_page_lists_exactly_the_ids_of_the_table()
    {
        var lines = File.ReadAllLines(ModulePage);
        var start = Array.IndexOf(lines, "## Error ids");
        Assert.True(start >= 0, "docs/cmdlets/QubesFirewall.md has no '## Error ids' section");
        var listed = lines.Skip(start + 1).TakeWhile(l => !l.StartsWith("## ", StringComparison.Ordinal))
            .Select(l => Regex.Match(l, @"^\| `([^`]+)` \| (.+) \|$")).Where(m => m.Success)
            .Select(m => (Id: m.Groups[1].Value, Meaning: m.Groups[2].Value.Trim())).ToList();
        var problems = Table.Value.Except(listed.Select(l => l.Id)).Select(id => $"{id} is in ErrorIds but not on the module page")
            .Concat(listed.Select(l => l.Id).Except(Table.Value).Select(id => $"{id} is on the module page but not in ErrorIds"))
            .Concat(listed.GroupBy(l => l.Id).Where(g => g.Count() > 1).Select(g => $"{g.Key} is listed twice"))
            .Concat(listed.Where(l => l.Meaning.Length < 10).Select(l => $"{l.Id} has no meaning on the module page"))
            .ToList();
        Assert.True(problems.Count == 0, string.Join(Environment.NewLine, problems));
    }

    /// <summary>
    /// Every error construction in src takes its id from the table (or passes on the id of the error it wraps):
    /// no id is a literal outside ErrorIds.cs, and none is put together from pieces.
    /// </summary>
    [Fact]
    public void No_id_is_written_outside_the_table_nor_built_at_run_time()
    {
        var ids = Table.Value.ToHashSet(StringComparer.Ordinal);
        var suffixes = Table.Value.SelectMany(id => Humps().Matches(id).Skip(1).Select(m => id[m.Index..])).ToHashSet(StringComparer.Ordinal);
        var problems = new List<string>();
        foreach (var (file, text) in SourceFiles())
        {
            if (file.EndsWith("ErrorIds.cs", StringComparison.Ordinal)) continue;
            var lines = text.Split('\n');
            for (var i = 0; i < lines.Length; i++)
            {
                var window = string.Join(' ', lines[Math.Max(0, i - 1)..Math.Min(lines.Length, i + 2)]);
                var errorContext = ErrorContext().IsMatch(window);
                foreach (Match m in StringLiteral().Matches(lines[i]))
                {
                    var word = m.Groups[1].Value;
                    if (errorContext && ids.Contains(word))
                        problems.Add($"{file}:{i + 1}: \"{word}\" is written out; use ErrorIds.{word}");
                    else if (errorContext && suffixes.Contains(word) && lines[i][..m.Index].Contains('+', StringComparison.Ordinal))
                        problems.Add($"{file}:{i + 1}: \"{word}\" is joined to make an error id; name the whole id from ErrorIds");
                }
            }
            foreach (Match m in IdArgument().Matches(text))
            {
                var argument = Regex.Replace(m.Groups["arg"].Value, @"\s+", " ").Trim();
                if (argument.IndexOfAny(['"', '+', '$']) >= 0)
                    problems.Add($"{file}:{text[..m.Index].Count(c => c == '\n') + 1}: error id '{argument}' is built, not named from ErrorIds");
            }
        }
        Assert.True(problems.Count == 0, string.Join(Environment.NewLine, problems));
    }

    /// <summary>The ids a cmdlet's own class raises (ErrorIds.X in its file) are named on its page.</summary>
    [Fact]
    public void A_cmdlet_page_names_the_ids_its_class_raises()
    {
        var problems = new List<string>();
        var checkedIds = 0;
        foreach (var (name, type) in CmdletDocsTests.CmdletTypes())
        {
            var page = File.ReadAllText(Path.Combine(DocsDirectory, name + ".md"));
            for (var t = type; t is not null && t != typeof(QubeCmdlet) && t.Assembly == type.Assembly; t = t.BaseType)
            {
                var file = Directory.EnumerateFiles(Path.Combine(SourceRoot, "QubesFirewall.PowerShell"), t.Name + ".cs", SearchOption.AllDirectories).SingleOrDefault();
                if (file is null) continue;
                foreach (var id in IdReference().Matches(File.ReadAllText(file)).Select(m => m.Groups[1].Value).Distinct())
                {
                    checkedIds++;
                    if (!page.Contains($"`{id}`", StringComparison.Ordinal))
                        problems.Add($"{name} raises {id} ({Path.GetFileName(file)}), but {name}.md does not name it");
                }
            }
        }
        Assert.True(checkedIds > 5, $"only {checkedIds} ids found in cmdlet classes");
        Assert.True(problems.Count == 0, string.Join(Environment.NewLine, problems));
    }

    /// <summary>
    /// Every PascalCase word the cmdlet pages set in code type is a real error id or a name the code has (a type,
    /// a member, an enum value, an audit check, a parameter), so a page cannot name an id that does not exist.
    /// </summary>
    [Fact]
    public void Every_id_like_word_of_the_docs_is_an_id_or_a_name_of_the_code()
    {
        var known = KnownNames();
        var problems = new List<string>();
        foreach (var page in Directory.EnumerateFiles(DocsDirectory, "*.md").Order(StringComparer.Ordinal))
            foreach (Match m in CodeWord().Matches(File.ReadAllText(page)))
                if (!Table.Value.Contains(m.Groups[1].Value) && !known.Contains(m.Groups[1].Value))
                    problems.Add($"{Path.GetFileName(page)}: `{m.Groups[1].Value}` is no error id (ErrorIds) and no name of the code");
        Assert.True(problems.Count == 0, string.Join(Environment.NewLine, problems.Distinct()));
    }

    /// <summary>
    /// Every check id Test-QubeFirewall's findings carry (the string constants of <see cref="Engine.Planning.AuditChecks"/>,
    /// <see cref="Engine.Planning.ForwardAuditChecks"/> and of each audit check's class) is named on its page.
    /// </summary>
    [Fact]
    public void Every_audit_check_id_is_named_on_the_Test_QubeFirewall_page()
    {
        var holders = typeof(ErrorIds).Assembly.GetTypes().Where(t => typeof(Engine.Planning.IAuditCheck).IsAssignableFrom(t) && !t.IsInterface)
            .Append(typeof(Engine.Planning.AuditChecks)).Append(typeof(Engine.Planning.ForwardAuditChecks));
        var ids = holders.SelectMany(t => t.GetFields(BindingFlags.Public | BindingFlags.Static).Where(f => f is { IsLiteral: true } && f.FieldType == typeof(string)))
            .Select(f => (string)f.GetRawConstantValue()!).Distinct().ToList();
        Assert.Contains(Engine.Agent.AgentStatusCheck.AgentBehind, ids);
        Assert.Contains(Engine.Planning.AuditChecks.DeadRule, ids);
        var page = File.ReadAllText(Path.Combine(DocsDirectory, "Test-QubeFirewall.md"));
        var missing = ids.Where(id => !page.Contains($"`{id}`", StringComparison.Ordinal)).ToList();
        Assert.True(missing.Count == 0, "check ids Test-QubeFirewall.md does not name: " + string.Join(", ", missing));
    }

    private static HashSet<string> KnownNames()
    {
        // PowerShell's own names the pages use.
        var names = new HashSet<string>(StringComparer.Ordinal) { "ShouldProcess", "ConfirmImpact", "FullName", "PlainText" };
        foreach (var assembly in new[] { typeof(ErrorIds).Assembly, typeof(QubeCmdlet).Assembly })
            foreach (var type in assembly.GetTypes())
            {
                names.Add(type.Name);
                foreach (var member in type.GetMembers(BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly))
                {
                    names.Add(member.Name);
                    if (member is FieldInfo { IsLiteral: true } f && f.GetRawConstantValue() is string s && type != typeof(ErrorIds)) names.Add(s);
                }
            }
        return names;
    }

    [GeneratedRegex(@"^[A-Z][a-z0-9]*(?:[A-Z0-9][A-Za-z0-9]*)*$")]
    private static partial Regex PascalCase();

    [GeneratedRegex(@"[A-Z][a-z0-9]*")]
    private static partial Regex Humps();

    [GeneratedRegex(@"(?<![\w$@])""([A-Z][A-Za-z0-9]+)""")]
    private static partial Regex StringLiteral();

    [GeneratedRegex(@"QubesFirewallException|FailureKind|\.ErrorId\b|\.Invalid\(")]
    private static partial Regex ErrorContext();

    /// <summary>
    /// The id argument of an error construction: the first argument of QubesFirewallException.Invalid, and the
    /// argument before a FailureKind (new QubesFirewallException(id, kind, ...), new(id, kind, ...), (id, kind) pairs).
    /// </summary>
    [GeneratedRegex(@"(?:QubesFirewallException\.Invalid\((?<arg>[^,]*),|[(,]\s*(?<arg>[^,()]+(?:\([^()]*\)[^,()]*)?),\s*(?:\w+\s*\?\s*)?(?:Engine\.)?FailureKind\.\w+)")]
    private static partial Regex IdArgument();

    [GeneratedRegex(@"\bErrorIds\.([A-Z]\w*)")]
    private static partial Regex IdReference();

    [GeneratedRegex(@"`([A-Z][a-z0-9]+(?:[A-Z][A-Za-z0-9]*)+)`")]
    private static partial Regex CodeWord();
}
