using System.Management.Automation.Language;

namespace QubesFirewall.PowerShell.Tests;

/// <summary>Files of the repository (build output and test results left out).</summary>
public static class RepoFiles
{
    private static readonly string[] Skipped = ["out", "bin", "obj", "TestResults", ".git"];

    public static IEnumerable<string> Relative(string pattern) =>
        Directory.EnumerateFiles(Repo.Root, pattern, SearchOption.AllDirectories)
            .Select(f => Path.GetRelativePath(Repo.Root, f))
            .Where(f => !f.Split(Path.DirectorySeparatorChar).Any(part => Skipped.Contains(part, StringComparer.Ordinal)))
            .Order(StringComparer.Ordinal);
}

/// <summary>One piece of PowerShell to lint: a .ps1 file, or a powershell code block of a markdown file.</summary>
public sealed record PowerShellSource(string Origin, int FirstLine, string Code)
{
    public override string ToString() => FirstLine == 1 ? Origin : $"{Origin}:{FirstLine}";

    /// <summary>Every .ps1 file and every ```powershell block of every .md file in the repository.</summary>
    public static IEnumerable<PowerShellSource> All() =>
        RepoFiles.Relative("*.ps1").Select(f => new PowerShellSource(f, 1, File.ReadAllText(Path.Combine(Repo.Root, f))))
            .Concat(RepoFiles.Relative("*.md").SelectMany(CodeBlocks));

    /// <summary>The fenced code blocks (``` or ~~~, indented or not) whose language is PowerShell.</summary>
    public static IEnumerable<PowerShellSource> CodeBlocks(string relativeMarkdown)
    {
        var lines = File.ReadAllLines(Path.Combine(Repo.Root, relativeMarkdown));
        for (var i = 0; i < lines.Length; i++)
        {
            var open = lines[i].TrimStart();
            if (!open.StartsWith("```", StringComparison.Ordinal) && !open.StartsWith("~~~", StringComparison.Ordinal)) continue;
            var fence = open[..(open.Length - open.TrimStart(open[0]).Length)];
            var info = open[fence.Length..].Trim();
            var end = i + 1;
            while (end < lines.Length && !lines[end].TrimStart().StartsWith(fence, StringComparison.Ordinal)) end++;
            if (new[] { "powershell", "pwsh", "ps1", "ps" }.Contains(info, StringComparer.OrdinalIgnoreCase))
                yield return new PowerShellSource(relativeMarkdown, i + 2, string.Join('\n', lines[(i + 1)..end]));
            i = end;
        }
    }
}

/// <summary>
/// The checks PSScriptAnalyzer would make that matter here (it is not available): every script and
/// every PowerShell example of the docs parses, uses no alias of the pwsh in use (Get-Alias), defines
/// functions with approved verbs (Get-Verb), and runs Invoke-Expression only on an audit finding's Fix.
/// </summary>
public class LintTests
{
    /// <summary>Aliases and approved verbs as the hosted pwsh (Microsoft.PowerShell.SDK) lists them.</summary>
    private static readonly Lazy<(HashSet<string> Aliases, HashSet<string> Verbs)> Lists = new(() =>
    {
        using var ps = System.Management.Automation.PowerShell.Create();
        var aliases = ps.AddScript("Get-Alias | ForEach-Object Name").Invoke().Select(o => o.ToString()).ToHashSet(StringComparer.OrdinalIgnoreCase);
        ps.Commands.Clear();
        var verbs = ps.AddScript("Get-Verb | ForEach-Object Verb").Invoke().Select(o => o.ToString()).ToHashSet(StringComparer.OrdinalIgnoreCase);
        return (aliases, verbs);
    });

    public static TheoryData<string> Sources()
    {
        var data = new TheoryData<string>();
        foreach (var origin in PowerShellSource.All().Select(s => s.Origin).Distinct()) data.Add(origin);
        return data;
    }

    /// <summary>Every problem of the sources of one file, "origin:line: message".</summary>
    public static List<string> Problems(IEnumerable<PowerShellSource> sources)
    {
        var (aliases, verbs) = Lists.Value;
        var problems = new List<string>();
        foreach (var source in sources)
        {
            var ast = Parser.ParseInput(source.Code, out _, out var errors);
            string At(IScriptExtent e) => $"{source.Origin}:{source.FirstLine + e.StartLineNumber - 1}";
            problems.AddRange(errors.Select(e => $"{At(e.Extent)}: does not parse: {e.Message}"));

            foreach (var command in ast.FindAll(a => a is CommandAst, true).Cast<CommandAst>())
            {
                var name = command.GetCommandName();
                if (name is null) continue;
                if (aliases.Contains(name))
                    problems.Add($"{At(command.Extent)}: '{name}' is an alias: write the command's name");
                if (IsInvokeExpression(name) && !RunsAnAuditFix(command))
                    problems.Add($"{At(command.Extent)}: Invoke-Expression runs only an audit finding's Fix ({command.Extent.Text})");
            }

            foreach (var function in ast.FindAll(a => a is FunctionDefinitionAst, true).Cast<FunctionDefinitionAst>())
            {
                var dash = function.Name.IndexOf('-', StringComparison.Ordinal);
                if (dash <= 0)
                    problems.Add($"{At(function.Extent)}: function '{function.Name}' is not named Verb-Noun");
                else if (!verbs.Contains(function.Name[..dash]))
                    problems.Add($"{At(function.Extent)}: function '{function.Name}' uses '{function.Name[..dash]}', not an approved verb (Get-Verb)");
            }
        }
        return problems;
    }

    private static bool IsInvokeExpression(string name) =>
        name.Equals("Invoke-Expression", StringComparison.OrdinalIgnoreCase) || name.Equals("iex", StringComparison.OrdinalIgnoreCase);

    /// <summary>The command's arguments read a member named Fix (Test-QubeFirewall's fix command).</summary>
    private static bool RunsAnAuditFix(CommandAst command) =>
        command.CommandElements.Skip(1).Any(e => e.Find(a => a is MemberExpressionAst { Member: StringConstantExpressionAst { Value: "Fix" } }, true) is not null);

    [Theory]
    [MemberData(nameof(Sources))]
    public void PowerShell_in_the_repository_passes_the_lint(string origin)
    {
        var problems = Problems(PowerShellSource.All().Where(s => s.Origin == origin));
        Assert.True(problems.Count == 0, string.Join(Environment.NewLine, problems));
    }

    [Fact]
    public void The_lint_reads_the_scripts_and_the_examples_of_the_docs()
    {
        var origins = PowerShellSource.All().Select(s => s.Origin).ToHashSet();
        Assert.Contains("build.ps1", origins);
        Assert.Contains("README.md", origins);
        Assert.Contains(Path.Combine("docs", "cmdlets", "Add-QubeFirewallRule.md"), origins);
        Assert.Contains(Path.Combine("docs", "cmdlets", "Test-QubeFirewall.md"), origins);
        Assert.Contains(Path.Combine("examples", "Demo.ps1"), origins);
    }

    [Fact]
    public void The_alias_and_verb_lists_are_pwsh_s_own()
    {
        var (aliases, verbs) = Lists.Value;
        foreach (var alias in new[] { "%", "?", "gci", "select", "where", "foreach", "iex" }) Assert.Contains(alias, aliases);
        foreach (var verb in new[] { "Get", "Add", "Remove", "Sync", "Test", "Repair", "Enable", "Disable", "Export", "Show" }) Assert.Contains(verb, verbs);
        Assert.DoesNotContain("Frobnicate", verbs);
    }

    [Fact]
    public void The_lint_finds_each_kind_of_problem()
    {
        var problems = Problems([new PowerShellSource("sample.ps1", 10, """
            gci | % { $_.Name }
            function Frobnicate-Thing { }
            function Helper { }
            Invoke-Expression $command
            $text | iex
            Invoke-Expression $finding.Fix
            Get-Qube -Name work | Where-Object { $_.Name -eq 'where' }
            if ( {
            """)]);
        Assert.Contains(problems, p => p.StartsWith("sample.ps1:10: 'gci' is an alias", StringComparison.Ordinal));
        Assert.Contains(problems, p => p.StartsWith("sample.ps1:10: '%' is an alias", StringComparison.Ordinal));
        Assert.Contains(problems, p => p.StartsWith("sample.ps1:11: function 'Frobnicate-Thing' uses 'Frobnicate'", StringComparison.Ordinal));
        Assert.Contains(problems, p => p.StartsWith("sample.ps1:12: function 'Helper' is not named Verb-Noun", StringComparison.Ordinal));
        Assert.Contains(problems, p => p.StartsWith("sample.ps1:13: Invoke-Expression runs only", StringComparison.Ordinal));
        Assert.Contains(problems, p => p.StartsWith("sample.ps1:14: 'iex' is an alias", StringComparison.Ordinal));
        Assert.Contains(problems, p => p.StartsWith("sample.ps1:14: Invoke-Expression runs only", StringComparison.Ordinal));
        Assert.Contains(problems, p => p.StartsWith("sample.ps1:17: does not parse", StringComparison.Ordinal));
        // Running a Fix, parameter names and strings that look like aliases are fine.
        Assert.DoesNotContain(problems, p => p.StartsWith("sample.ps1:15:", StringComparison.Ordinal) || p.StartsWith("sample.ps1:16:", StringComparison.Ordinal));
    }
}
