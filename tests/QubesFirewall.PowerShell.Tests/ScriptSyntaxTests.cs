using System.Management.Automation.Language;

namespace QubesFirewall.PowerShell.Tests;

/// <summary>Every .ps1 in the repository parses: a syntax error fails the build, not a user.</summary>
public class ScriptSyntaxTests
{
    public static TheoryData<string> Scripts()
    {
        var data = new TheoryData<string>();
        foreach (var path in ScriptPaths()) data.Add(path);
        return data;
    }

    private static IEnumerable<string> ScriptPaths()
    {
        foreach (var file in Directory.EnumerateFiles(Repo.Root, "*.ps1", SearchOption.AllDirectories)
                     .Where(f => !f.Contains($"{Path.DirectorySeparatorChar}out{Path.DirectorySeparatorChar}") && !f.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}") && !f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}"))
                     .Order(StringComparer.Ordinal))
            yield return Path.GetRelativePath(Repo.Root, file);
    }

    [Theory]
    [MemberData(nameof(Scripts))]
    public void Parses_without_errors(string relativePath)
    {
        Parser.ParseFile(Path.Combine(Repo.Root, relativePath), out _, out var errors);
        Assert.True(errors.Length == 0, string.Join(Environment.NewLine, errors.Select(e => $"{relativePath}:{e.Extent.StartLineNumber}: {e.Message}")));
    }

    [Fact]
    public void The_repository_has_scripts_to_check() =>
        Assert.Contains(Path.Combine("tests", "Pester", "Invoke-Tests.ps1"), ScriptPaths());
}
